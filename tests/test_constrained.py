"""Grammar-constrained actions (agents.constrained): grammars, validity in the environment,
exact log-probs under the masks, and PPO/KL under the same masks."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import memenv  # noqa: F401  (registers MemorySession-v0)
from agents.backbone import tiny_backbone as make_tiny
from agents.constrained import (
    ANSWER,
    EXTRACT,
    MANAGE,
    answer_grammar,
    check_manage_ops,
    compiled_matcher,
    extract_grammar,
    grammar_for,
    manage_grammar,
    replay_masks,
    unpack_bitmask,
)
from agents.generation import generate, sequence_logprobs
from agents.llm_agent import LLMAgent
from memenv.parsing import parse_answer, parse_facts, parse_operations
from memenv.play import play

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# Sampling-time and training-time log-probs agree within this in fp32 (measured: ~6e-6).
FP32_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tok():
    return make_tiny().tokenizer


def accepts(constraint, tokenizer, text: str) -> bool:
    """Whether the grammar accepts ``text`` as a whole output (then the stop token)."""
    matcher = compiled_matcher(constraint, tokenizer, [tokenizer.eos_token_id])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return matcher.consume_tokens(ids) and (matcher.is_accepting() or matcher.is_stopped())


# ----------------------------------------------------------------------------- grammars


def test_manage_ids_are_an_enum_of_the_observation_and_fact_indices_are_in_range(tok):
    g = manage_grammar(["m1", "m7"], num_facts=2, budget=256)
    ok = ['{"operations": []}',
          '{"operations": [{"op": "ADD", "fact": 1}, {"op": "UPDATE", "id": "m7", "text": "Bob has a dog."}]}',
          '{"operations": [{"op": "NOOP"}, {"op": "UPDATE", "id": "m1", "fact": 0}, {"op": "DELETE", "id": "m7"}]}',
          '{"operations": [{"op": "UPDATE", "id": "m1", "text": "x"}, {"op": "DELETE", "id": "m1"}, '
          '{"op": "DELETE", "id": "m7"}]}']
    bad = ['{"operations": [{"op": "DELETE", "id": "m2"}]}',  # not an id of this observation
           '{"operations": [{"op": "UPDATE", "id": "m17", "text": "x"}]}',  # a prefix of it is, not the id
           '{"operations": [{"op": "ADD", "fact": 2}]}',  # 2 facts: indices 0 and 1
           '{"operations": [{"op": "ADD", "text": " "}]}',  # blank text
           '{"operations": [{"op": "DELETE", "id": "m1"}, {"op": "UPDATE", "id": "m1", "text": "x"}]}',
           '{"operations": [{"op": "DELETE", "id": "m1"}, {"op": "DELETE", "id": "m1"}]}',
           '{"operations": [{"op": "MOVE", "id": "m1"}]}']
    assert all(accepts(g, tok, text) for text in ok)
    assert not any(accepts(g, tok, text) for text in bad)
    no_ids = manage_grammar([], num_facts=0, budget=256)
    assert accepts(no_ids, tok, '{"operations": [{"op": "ADD", "text": "Alice moved."}, {"op": "NOOP"}]}')
    assert not accepts(no_ids, tok, '{"operations": [{"op": "ADD", "fact": 0}]}')
    assert not accepts(no_ids, tok, '{"operations": [{"op": "NOOP"}, {"op": "DELETE", "id": "m1"}]}')


def test_manage_ops_narrow_the_manage_grammar(tok):
    add_noop = manage_grammar(["m1", "m7"], num_facts=2, budget=256, ops=("ADD", "NOOP"))
    assert accepts(add_noop, tok, '{"operations": [{"op": "ADD", "fact": 1}, {"op": "NOOP"}, {"op": "ADD", "text": "x"}]}')
    assert accepts(add_noop, tok, '{"operations": []}')
    for text in ('{"operations": [{"op": "UPDATE", "id": "m1", "text": "x"}]}',
                 '{"operations": [{"op": "UPDATE", "id": "m1", "fact": 0}]}',
                 '{"operations": [{"op": "ADD", "fact": 0}, {"op": "DELETE", "id": "m7"}]}'):
        assert accepts(manage_grammar(["m1", "m7"], num_facts=2, budget=256), tok, text)  # the full grammar has them
        assert not accepts(add_noop, tok, text)
    deletes = manage_grammar(["m1", "m7"], num_facts=2, budget=256, ops=["delete"])
    assert accepts(deletes, tok, '{"operations": [{"op": "DELETE", "id": "m1"}, {"op": "DELETE", "id": "m7"}]}')
    assert not accepts(deletes, tok, '{"operations": [{"op": "NOOP"}]}')
    assert not accepts(manage_grammar([], num_facts=0, budget=256, ops=("UPDATE",)), tok, '{"operations": [{"op": "NOOP"}]}')
    obs = {"role": MANAGE, "memories": [{"id": "m1", "text": "a"}], "facts": ["b"]}
    assert not accepts(grammar_for(obs, MANAGE, max_new_tokens=128, manage_ops="ADD/NOOP"), tok,
                       '{"operations": [{"op": "DELETE", "id": "m1"}]}')
    assert check_manage_ops(None) == ("ADD", "UPDATE", "DELETE", "NOOP")
    assert check_manage_ops("noop/add") == ("ADD", "NOOP")  # the canonical order
    for bad in ("ADD/MOVE", "", ()):
        with pytest.raises(ValueError, match="manager operations must be a non-empty set of ADD, UPDATE, DELETE, NOOP"):
            check_manage_ops(bad)


def test_extract_and_answer_grammars(tok):
    g = extract_grammar(256)
    assert accepts(g, tok, '{"facts": []}') and accepts(g, tok, '{"facts": ["Alice moved to Lyon.", "Bob has a dog."]}')
    assert not accepts(g, tok, '{"facts": ["a\\nb"]}') and not accepts(g, tok, '{"facts": [""]}')
    a = answer_grammar(["m3", "m7"], 64)
    assert accepts(a, tok, "Relevant: m7, m3\nAnswer: Lyon") and accepts(a, tok, "Relevant: \nAnswer: unknown")
    assert not accepts(a, tok, "Relevant: m4\nAnswer: Lyon") and not accepts(a, tok, "Relevant: m3\nAnswer: ")
    assert accepts(answer_grammar(["m3"], 64, distill=False), tok, "Answer: 3 May 2023")


@pytest.mark.parametrize("budget", [48, 96, 128, 256])
def test_grammars_fit_the_budget(budget):
    """The longest output (one token per byte of fixed syntax) ends within the budget."""
    ids = [f"m{i}" for i in range(30)]
    for g in (extract_grammar(budget), manage_grammar(ids, 6, budget), answer_grammar(ids, budget)):
        assert g.max_tokens <= budget, (g.role, g.max_tokens)


def test_grammar_for_reads_the_observation():
    obs = {"role": "manage", "facts": [{"text": "a"}, {"text": "b"}, {"text": "c"}],
           "memories": [{"id": "m4", "text": "x"}, {"id": "m9", "text": "y"}, {"id": "m4", "text": "x"}]}
    g = grammar_for(obs, MANAGE, max_new_tokens=256)
    assert 'mid: "m4" | "m9"\n' in g.lark and 'index: "0" | "1" | "2"\n' in g.lark
    assert grammar_for(obs, EXTRACT, max_new_tokens=256).role == EXTRACT
    assert grammar_for({"memories": []}, ANSWER, max_new_tokens=64, distill=False).lark.startswith('start: "Answer: "')
    with pytest.raises(ValueError, match="unknown role"):
        grammar_for(obs, "summarise", max_new_tokens=64)


# ------------------------------------------------------------------------ environment


def _play(constrained: bool, worlds=5):
    agent = LLMAgent(make_tiny(), temperature=1.0, seed=0, constrained=constrained, batch_size=64,
                     max_new_tokens={"extract": 96, "manage": 128, "answer": 32})
    make = lambda: gym.make("MemorySession-v0", num_sessions=3, disable_env_checker=True)  # noqa: E731
    verdicts = {EXTRACT: [], MANAGE: [], ANSWER: []}
    actions = {EXTRACT: [], MANAGE: [], ANSWER: []}

    def on_turn(turn):
        verdicts[turn.role].append(bool(turn.next_info.get("valid")))
        actions[turn.role].append(turn.action)

    play(make, list(range(worlds)), agent, on_turn=on_turn)
    return verdicts, actions


def test_untrained_model_under_constraints_plays_only_valid_actions():
    """A random tiny model, 5 synthetic worlds, every role: the environment rejects nothing
    (and unconstrained, it rejects most extract and manage actions)."""
    verdicts, actions = _play(constrained=True)
    assert all(len(verdicts[role]) >= 5 for role in verdicts)
    assert all(all(v) for v in verdicts.values()), {r: v.count(False) for r, v in verdicts.items()}
    assert any(parse_facts(a)[0] for a in actions[EXTRACT])  # facts were written, not only empty lists
    assert any(parse_operations(a)[0] for a in actions[MANAGE])
    assert all(parse_answer(a) for a in actions[ANSWER])
    free, _ = _play(constrained=False)
    rejected = [not v for role in (EXTRACT, MANAGE) for v in free[role]]
    assert np.mean(rejected) > 0.5


# ---------------------------------------------------------------------------- log-probs


def test_recomputed_logprobs_equal_the_sampled_ones_and_masks_bind():
    """200 constrained samples: training-time log-probs (masks replayed from the grammar)
    equal the sampling-time ones, and the grammar masked the model's argmax somewhere."""
    bb = make_tiny()
    tokenizer = bb.tokenizer
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"session {i}"}], tokenize=False,
                                             add_generation_prompt=True) for i in range(4)]
    constraints = [extract_grammar(64), manage_grammar(["m1", "m2", "m10"], 3, 96),
                   answer_grammar(["m1", "m2"], 40), answer_grammar([], 24, distill=False)]
    rollout = generate(bb.model, tokenizer, prompts, num_samples=50, max_new_tokens=96, temperature=1.0, seed=0,
                       constraints=constraints)
    assert rollout.completion_ids.shape[0] == 200
    completions = [ids[m.bool()].tolist() for ids, m in zip(rollout.completion_ids, rollout.completion_mask)]
    masks = replay_masks(rollout.constraints, completions, rollout.completion_ids.shape[1])
    prompt_ids, prompt_mask = rollout.sample_prompts()
    with torch.no_grad():
        recomputed = sequence_logprobs(bb.model, prompt_ids, prompt_mask, rollout.completion_ids,
                                       rollout.completion_mask, temperature=1.0, token_masks=masks)
        unmasked = sequence_logprobs(bb.model, prompt_ids, prompt_mask, rollout.completion_ids,
                                     rollout.completion_mask, temperature=1.0)
        ids = torch.cat([prompt_ids, rollout.completion_ids], dim=1)
        attention = torch.cat([prompt_mask, rollout.completion_mask], dim=1)
        logits = bb.model(input_ids=ids, attention_mask=attention,
                          position_ids=(attention.cumsum(-1) - 1).clamp(min=0)).logits
    assert (recomputed - rollout.logprobs).abs().max() < FP32_TOLERANCE
    assert (unmasked - rollout.logprobs).abs().max() > 1.0  # the masks matter
    argmax = logits[:, prompt_ids.shape[1] - 1: -1].argmax(-1)  # (N, T) the model's favourite at each step
    allowed = unpack_bitmask(masks, logits.shape[-1]).gather(-1, argmax[..., None]).squeeze(-1)
    masked_argmax = (~allowed & rollout.completion_mask.bool()).sum()
    assert masked_argmax > 100
    for text, constraint in zip(rollout.texts, rollout.constraints):
        if constraint.role == EXTRACT:
            assert parse_facts(text)[1] is None
        elif constraint.role == MANAGE:
            assert parse_operations(text)[1] is None


def test_first_ppo_ratio_is_one_and_the_kl_uses_the_same_masks():
    """A fresh adapter (the policy equals the reference): ratio 1 and KL 0, both under masks."""
    from agents.lora import add_lora
    from agents.sampler import RoleSampler
    from algos.update import Sample, UpdateConfig, ppo_update

    bb = make_tiny()
    model = add_lora(bb)
    model.eval()
    sampler = RoleSampler(model, bb.tokenizer, prompt_style="compact", max_new_tokens=64,
                          generator=torch.Generator().manual_seed(0))
    obs = json.dumps({"role": "manage", "session": 0, "num_sessions": 1, "date": "1 May 2023", "speakers": ["A", "B"],
                      "facts": [{"index": 0, "text": "A moved.", "related": ["m1"]}],
                      "memories": [{"id": "m1", "text": "A lives in Paris."}]})
    gens = sampler.sample([obs], num_samples=6)[0]
    assert all(g.constraint is not None for g in gens)
    samples = [Sample(g.prompt_ids, g.completion_ids, g.logprobs, "manage", 0, False, advantage=1.0 - 2 * (i % 2),
                      constraint=g.constraint) for i, g in enumerate(gens)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    stats = ppo_update(model, samples, optimizer, UpdateConfig(ppo_epochs=1, num_minibatches=1),
                       pad_id=bb.tokenizer.pad_token_id, rng=np.random.default_rng(0))
    assert stats["losses/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert stats["losses/kl"] == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(stats["losses/entropy"]) and np.isfinite(stats["losses/grad_norm"])


@pytest.mark.parametrize("budget", [64, 256, 384, 1024])
@pytest.mark.parametrize("num_facts", [5, 24])
def test_manage_capacity_is_the_most_fact_adds_the_grammar_admits(tok, budget, num_facts):
    from agents.constrained import manage_capacity

    g = manage_grammar(["m1", "m2"], num_facts=num_facts, budget=budget, ops=("ADD", "NOOP"))

    def adds(k):
        return '{"operations": [' + ", ".join('{"op": "ADD", "fact": %d}' % (i % num_facts) for i in range(k)) + "]}"

    capacity = manage_capacity(num_facts, budget, ids=["m1", "m2"], ops=("ADD", "NOOP"))
    assert capacity >= 1 and accepts(g, tok, adds(capacity)) and not accepts(g, tok, adds(capacity + 1))
    assert manage_capacity(num_facts, budget, ops=("NOOP",)) == 0


def test_a_manage_turn_with_more_facts_than_the_budget_keeps_warns_once():
    from agents.constrained import manage_capacity
    from agents.sampler import RoleSampler

    bb = make_tiny()
    facts = [{"text": f"fact {i}", "speaker": "A", "related": []} for i in range(12)]
    obs = json.dumps({"role": "manage", "memories": [], "facts": facts})
    assert manage_capacity(12, 256) < 12 <= manage_capacity(12, 1024)
    small = RoleSampler(bb.model, bb.tokenizer, prompt_style="compact", max_new_tokens=256)
    with pytest.warns(UserWarning, match="12 facts but max_new_tokens=256 .* at most 7 fact operations"):
        small.constraint(obs)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small.constraint(obs)  # once per sampler
        RoleSampler(bb.model, bb.tokenizer, prompt_style="compact", max_new_tokens=1024).constraint(obs)
