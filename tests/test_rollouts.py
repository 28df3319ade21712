"""Global groups, forked local rerollouts and their advantages, with a scripted stand-in policy."""

import json
from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest

import memenv  # noqa: F401
from agents.sampler import Generation
from algos import rollouts as R
from memenv.scripted import OracleAgent


class CoinPolicy:
    """Manage turns: ADD every fact (by index) or keep nothing, by a seeded coin."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.prompts = []

    def generate(self, observations):
        out = []
        for obs in observations:
            self.prompts.append(obs)
            data = json.loads(obs)
            if self.rng.random() < 0.5:
                text = json.dumps({"operations": [{"op": "ADD", "fact": i} for i in range(len(data["facts"]))]})
            else:
                text = '{"operations": [{"op": "NOOP"}]}'
            out.append(Generation(text, [1, 2], [3, len(text) % 7], [-0.5, -0.25]))
        return out


def make():
    return gym.make("MemorySession-v0", num_sessions=4, disable_env_checker=True)


def run(inner_fraction, seed=0, local_weight=1.0):
    return R.collect(CoinPolicy(seed), R.ScriptedAnswerer(), make, [1_000_003, 1_000_004], group_size=4,
                     inner_fraction=inner_fraction, inner_n=4, max_local_questions=16, local_weight=local_weight,
                     rng=np.random.default_rng(seed), extractor=OracleAgent())


def test_inner_fraction_zero_is_plain_grpo():
    batch = run(0.0)
    assert batch.stats["charts/local_groups"] == 0 and not any(s.local for s in batch.samples)
    # 2 conversations x 4 rollouts x 4 sessions, one manage sample each (extract is the oracle's)
    assert len(batch.samples) == 32 and {s.role for s in batch.samples} == {"manage"}


def test_local_rerollouts_start_from_one_state_and_are_normalised_within_their_set():
    batch = run(1.0)
    local = [s for s in batch.samples if s.local]
    assert batch.stats["charts/local_groups"] > 0 and len(local) == 4 * batch.stats["charts/local_groups"]
    # within a reroll set, rerolls that kept the facts beat those that kept nothing
    by_group = defaultdict(list)
    for s in local:
        by_group[s.group].append(s.advantage)
    assert all(len(v) == 4 and abs(sum(v)) < 1e-6 for v in by_group.values())
    assert any(max(v) > 0 > min(v) for v in by_group.values())


def test_rerolls_see_the_identical_forked_observation():
    policy = CoinPolicy(1)
    R.collect(policy, R.ScriptedAnswerer(), make, [1_000_003], group_size=2, inner_fraction=1.0, inner_n=3,
              max_local_questions=16, local_weight=1.0, rng=np.random.default_rng(1), extractor=OracleAgent())
    counts = defaultdict(int)
    for obs in policy.prompts:
        counts[obs] += 1
    # each local group's 3 rerolls get the same manage observation as the rollout they forked
    assert max(counts.values()) >= 4


def test_global_advantages_are_normalised_per_session_across_the_group():
    batch = run(0.0, seed=3)
    by_key = defaultdict(list)
    for s in batch.samples:
        by_key[s.session].append(s.advantage)
    flat = [a for v in by_key.values() for a in v]
    assert any(a != 0 for a in flat)
    for values in by_key.values():  # two conversations per session column: each sums to zero
        assert abs(sum(values)) < 1e-6


def test_local_weight_scales_local_advantages_only():
    one, two = run(1.0, seed=5), run(1.0, seed=5, local_weight=2.0)
    for a, b in zip(one.samples, two.samples):
        assert b.advantage == pytest.approx(a.advantage * (2.0 if a.local else 1.0))


def test_session_rewards_use_credit_compression_and_penalties():
    slot = R._Slot(env=None, obs="", info={}, group=("global", 0), local=False,
                   final_info={"session_credit": [1.0, None, 0.5], "episode_summary": {"mean_score": 0.6}})
    slot.compression = {0: 0.1, 2: 0.2}
    slot.penalty[1] = -0.1
    assert R.session_rewards(slot, 3).tolist() == pytest.approx([0.9, 0.5, 0.3])


# ---------------------------------------------------------------- Memory-R2's reward timing (issue 17)
# Facts the scripted policy extracts per session, and how the scripted answerer reads memories.
CREDIT_FACTS = {0: ["Bob is a nurse."], 1: ["Weather talk."], 2: ["Alice lives in the city of Lyon now."]}
CREDIT_READER = {"q0": ("nurse", "nurse"), "q1": ("Lyon", "Lyon"), "q2": ("violin", "violin")}


class KeepOrForget:
    """Extracts ``CREDIT_FACTS``; manage: the even-indexed rollouts of a batch ADD every fact,
    the odd ones keep nothing (so rollout 0 writes memories and rollout 1 does not)."""

    temperature = 1.0

    def __init__(self):
        self.calls = []

    def generate(self, observations, temperature=None):
        self.calls.append((len(observations), temperature))
        out = []
        for i, obs in enumerate(observations):
            data = json.loads(obs)
            if data["role"] == "extract":
                text = json.dumps({"facts": CREDIT_FACTS[data["session"]]})
            elif i % 2 == 0:
                text = json.dumps({"operations": [{"op": "ADD", "fact": j} for j in range(len(data["facts"]))]})
            else:
                text = '{"operations": [{"op": "NOOP"}]}'
            out.append(Generation(text, [1, 2], [3, 4], [-0.5, -0.25]))
        return out

    def rescore(self, observations, gens):
        return [Generation(g.text, g.prompt_ids, g.completion_ids, [-9.0] * len(g.completion_ids)) for g in gens]


class KeywordReader:
    """Answers a question with its keyword when a shown memory contains it, else 'no idea'."""

    def __init__(self):
        self.asked = []

    def answer(self, observations, infos):
        out = []
        for obs in observations:
            data = json.loads(obs)
            self.asked.append(data["question_id"])
            keyword, answer = CREDIT_READER[data["question_id"]]
            out.append(answer if any(keyword in m["text"] for m in data["memories"]) else "no idea")
        return out


def credit_env(**kwargs):
    from memenv.env import MemorySessionEnv
    from tests.helpers_env import CreditSource

    return lambda: MemorySessionEnv(source=CreditSource(), **kwargs)


def credit_collect(reader=None, **kwargs):
    options = dict(group_size=2, inner_fraction=0.0, inner_n=2, max_local_questions=16, local_weight=1.0,
                   rng=np.random.default_rng(0))
    options.update(kwargs)
    return R.collect(KeepOrForget(), reader or KeywordReader(), credit_env(), ["credit"], **options)


# rollout 0's final memory: 4 + 2 + 8 = 14 tokens against 15 seen: 0.2 * (14 - 0.7 * 15) / 15
COMPRESSION = 0.2 * (14 - 10.5) / 15


def test_final_timing_scores_the_final_memory_credits_evidence_sessions_and_zero_elsewhere():
    reader = KeywordReader()
    batch = credit_collect(reader)
    # the answerer is asked once per rollout and question, after the last session only
    assert sorted(reader.asked) == ["q0", "q0", "q1", "q1", "q2", "q2"]
    # hand-computed rewards: rollout 0 answers q0 and q1 (1.0 each) and not q2 (0.0)
    #   session 0: mean(q0, q1) = 1.0;  session 1: no question -> 0;  session 2: mean(q1, q2) = 0.5
    #   each minus the FINAL compression penalty
    # rollout 1 kept nothing: 0 everywhere, no compression
    expected = np.array([[1.0 - COMPRESSION, 0.0 - COMPRESSION, 0.5 - COMPRESSION], [0.0, 0.0, 0.0]])
    assert batch.stats["charts/session_reward"] == pytest.approx(expected.mean())
    assert batch.stats["charts/episode_score"] == pytest.approx((2 / 3 + 0.0) / 2)
    # two rollouts: every session column normalises to +-1/sqrt(2), session 1 too (by compression
    # alone): rollout 0 (the one that writes memories) is ahead in sessions 0 and 2, behind in 1
    manage = [s for s in batch.samples if s.role == "manage"]
    assert len(manage) == 6 and all(abs(abs(s.advantage) - 2 ** -0.5) < 1e-4 for s in manage)
    signs = sorted((s.session, s.advantage > 0) for s in manage)
    assert signs == [(0, False), (0, True), (1, False), (1, True), (2, False), (2, True)]


def test_final_session_rewards_by_hand():
    slots = []
    policy, reader = KeepOrForget(), KeywordReader()
    make = credit_env()
    for g in range(2):
        env = make()
        obs, info = env.reset(options={"conversation": "credit"})
        slots.append(R._Slot(env, obs, info, ("global", 0), local=False))
    while not all(s.done for s in slots):
        active = [s for s in slots if not s.done]
        gens = policy.generate([s.obs for s in active]) if active[0].info["role"] != "answer" else None
        for k, slot in enumerate(active):
            action = gens[k].text if gens else ""
            slot.obs, _, done, _, slot.info = slot.env.step(action)
            slot.done = done
    R._score_final(slots, reader, np.random.default_rng(0), max_questions=64)
    assert R.final_session_rewards(slots[0], 3).tolist() == pytest.approx(
        [1.0 - COMPRESSION, -COMPRESSION, 0.5 - COMPRESSION])
    assert R.final_session_rewards(slots[1], 3).tolist() == pytest.approx([0.0, 0.0, 0.0])
    # at most 2 questions: one draw for the whole group, so both rollouts answer the same two
    R._score_final(slots, reader, np.random.default_rng(7), max_questions=2)
    assert len(slots[0].final_scores) == 2 and set(slots[0].final_scores) == set(slots[1].final_scores)


def test_asked_timing_keeps_the_earlier_rule():
    batch = credit_collect(reward_timing="asked")
    # rollout 0: q0 asked after session 0 (1.0), q1 and q2 after session 2 (1.0, 0.0): episode mean 2/3;
    # session 1 has no question and gets that mean; q2 has no evidence and credits no session, so
    # session 2 gets q1 alone; compression is taken after each session
    comp = [0.2 * max(0.0, m - 0.7 * seen) / seen for m, seen in ((4, 8), (6, 10), (14, 15))]
    row0 = [1.0 - comp[0], 2 / 3 - comp[1], 1.0 - comp[2]]
    assert batch.stats["charts/session_reward"] == pytest.approx((sum(row0) + 0.0) / 6)


def test_invalid_penalty_enters_the_session_reward_and_zero_penalty_leaves_it_out():
    class Broken(KeepOrForget):
        def generate(self, observations, temperature=None):
            return [Generation("garbage", [1], [2], [-1.0]) for _ in observations]

    for penalty in (0.1, 0.0):
        make = credit_env(invalid_penalty=penalty)
        batch = R.collect(Broken(), KeywordReader(), make, ["credit"], group_size=2, inner_fraction=0.0, inner_n=2,
                          max_local_questions=16, local_weight=1.0, rng=np.random.default_rng(0))
        # extract and manage both invalid in every session: -2 * penalty each; memories stay empty
        assert batch.stats["charts/session_reward"] == pytest.approx(-2 * penalty)


def test_local_rerolls_share_one_question_sample_and_sessions_without_questions_are_rerolled():
    reader = KeywordReader()
    batch = credit_collect(reader, inner_fraction=1.0, inner_n=2, max_local_questions=1)
    groups = {s.group for s in batch.samples if s.local}
    assert groups == {("local", 0, 0), ("local", 0, 1), ("local", 0, 2)}
    # one sampled question (of those due so far) scores every reroll of a set: 3 sets x 2 rerolls
    assert len(reader.asked) == 6 + 6  # plus the final scoring of 2 rollouts x 3 questions
    from memenv.env import MemorySessionEnv
    from tests.helpers_env import LongSource

    def make():
        return MemorySessionEnv(source=LongSource(3))

    def groups_of(skip):
        batch = R.collect(KeepOrForget(), KeywordReader(), make, ["long-3"], group_size=2, inner_fraction=1.0,
                          inner_n=2, max_local_questions=16, local_weight=1.0, rng=np.random.default_rng(0),
                          skip_unprobed_sessions=skip)
        return {s.group for s in batch.samples if s.local}

    # no question is ever due: rerolled by default (compression and invalid actions still differ), skipped on request
    assert groups_of(False) == {("local", 0, 0), ("local", 0, 1), ("local", 0, 2)} and groups_of(True) == set()


def test_local_question_sample_is_drawn_once_per_reroll_set():
    from memenv.env import MemorySessionEnv

    env = MemorySessionEnv(num_sessions=4)
    env.reset(options={"conversation": 1_000_003})
    due = env.questions_due_by(3)
    assert len(due) > 2
    slots = [R._Slot(env, "", {"role": "extract", "session": 3}, ("global", 0), local=False)]
    R._spawn_local_rerollouts(slots, list(slots), set(), np.random.default_rng(0), 1, 1.0, 3, 2, "sample", False)
    picks = {s.questions for s in slots if s.local}
    assert len(picks) == 1 and len(next(iter(picks))) == 2 and set(next(iter(picks))) <= set(due)
    latest = [R._Slot(env, "", {"role": "extract", "session": 3}, ("global", 0), local=False)]
    R._spawn_local_rerollouts(latest, list(latest), set(), np.random.default_rng(0), 1, 1.0, 3, 2, "latest", False)
    assert {s.questions for s in latest if s.local} == {tuple(due[-2:])}


def test_local_temperature_decodes_rerolls_apart_and_rescores_them_at_the_training_temperature():
    policy = KeepOrForget()
    batch = R.collect(policy, KeywordReader(), credit_env(), ["credit"], group_size=2, inner_fraction=1.0,
                      inner_n=2, max_local_questions=16, local_weight=1.0, rng=np.random.default_rng(0),
                      local_temperature=0.5)
    assert (2, None) in policy.calls and any(t == 0.5 for _, t in policy.calls)
    assert all(s.logprobs == [-9.0, -9.0] for s in batch.samples if s.local)  # rescored
    assert all(s.logprobs == [-0.5, -0.25] for s in batch.samples if not s.local)
    greedy = KeepOrForget()
    batch = R.collect(greedy, KeywordReader(), credit_env(), ["credit"], group_size=2, inner_fraction=1.0,
                      inner_n=2, max_local_questions=16, local_weight=1.0, rng=np.random.default_rng(0),
                      local_temperature=0.0)
    # greedy log-probs are untempered, i.e. already at the training temperature 1: kept
    assert all(s.logprobs == [-0.5, -0.25] for s in batch.samples)


class CutOffInLastSession(KeepOrForget):
    """KeepOrForget, but the manage outputs of session 2 (and with ``always`` every manage
    output) come back cut off at the token limit."""

    def __init__(self, always=False):
        super().__init__()
        self.always = always

    def generate(self, observations, temperature=None):
        gens = super().generate(observations, temperature)
        for obs, g in zip(observations, gens):
            data = json.loads(obs)
            if data["role"] == "manage" and (self.always or data["session"] == 2):
                g.truncated = True
        return gens


def test_zero_truncated_zeroes_the_session_of_a_cut_off_output_and_its_rerolls():
    runs = {}
    for zero in (False, True):
        runs[zero] = R.collect(CutOffInLastSession(), KeywordReader(), credit_env(), ["credit"], group_size=2,
                               inner_fraction=0.0, inner_n=2, max_local_questions=16, local_weight=1.0,
                               rng=np.random.default_rng(0), zero_truncated=zero)
    # rollout 0's rewards [1 - C, -C, 0.5 - C]; rollout 1's [0, 0, 0]; session 2 is cut off in both
    assert runs[False].stats["charts/session_reward"] == pytest.approx((1.5 - 3 * COMPRESSION) / 6)
    assert runs[True].stats["charts/session_reward"] == pytest.approx((1.0 - 2 * COMPRESSION) / 6)
    assert runs[True].stats["charts/truncated_sessions"] == 2.0
    # session 2 now ties (0 and 0): no advantage; sessions 0 and 1 keep theirs
    adv = {(s.session, s.advantage > 0) for s in runs[True].samples if s.role == "manage" and s.advantage}
    assert {session for session, _ in adv} == {0, 1}
    local = R.collect(CutOffInLastSession(always=True), KeywordReader(), credit_env(), ["credit"], group_size=2,
                      inner_fraction=1.0, inner_n=2, max_local_questions=16, local_weight=1.0,
                      rng=np.random.default_rng(0), zero_truncated=True)
    assert local.stats["charts/local_groups"] > 0 and local.stats["charts/local_reward"] == 0.0


def test_skip_uniform_groups_leaves_out_exactly_the_tied_sessions_and_reroll_sets():
    runs = {}
    for skip in (False, True):
        runs[skip] = R.collect(CutOffInLastSession(), KeywordReader(), credit_env(), ["credit"], group_size=2,
                               inner_fraction=0.0, inner_n=2, max_local_questions=16, local_weight=1.0,
                               rng=np.random.default_rng(0), zero_truncated=True, skip_uniform_groups=skip)
    kept, everything = runs[True], runs[False]
    # session 2 ties (both rollouts cut off there: reward 0 and 0); sessions 0 and 1 do not
    tied = [s for s in everything.samples if s.session == 2]
    assert tied and all(s.advantage == 0.0 for s in tied)
    assert {s.session for s in kept.samples} == {s.session for s in everything.samples} - {2}
    assert len(kept.samples) == len(everything.samples) - len(tied)
    assert kept.stats["charts/uniform_group_samples"] == len(tied)
    assert kept.stats["charts/generated_tokens"] == everything.stats["charts/generated_tokens"]  # still spent
    local = R.collect(CutOffInLastSession(always=True), KeywordReader(), credit_env(), ["credit"], group_size=2,
                      inner_fraction=1.0, inner_n=2, max_local_questions=16, local_weight=1.0,
                      rng=np.random.default_rng(0), zero_truncated=True, skip_uniform_groups=True)
    # every reroll is cut off, so every reroll set ties at 0 and none of its samples is kept
    assert local.stats["charts/local_groups"] > 0 and not any(s.local for s in local.samples)
