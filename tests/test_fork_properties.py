"""Property tests: operations applied to a parent and its forks never leak between them,
and no action string at any role raises or changes memory when invalid."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memenv.env import MemorySessionEnv
from tests.helpers_env import LongSource, TinySource

# One op drawn against the ids an env is likely to have (some valid, some not).
op_strategy = st.one_of(
    st.builds(lambda t: {"op": "ADD", "text": t}, st.text(min_size=1, max_size=12).filter(str.strip)),
    st.builds(lambda i, t: {"op": "UPDATE", "id": f"m{i}", "text": t}, st.integers(0, 12), st.text(min_size=1, max_size=12).filter(str.strip)),
    st.builds(lambda i: {"op": "DELETE", "id": f"m{i}"}, st.integers(0, 12)),
    st.just({"op": "NOOP"}),
)
# A program: a list of (which env, op list) steps; env 0 is the root, others are forks.
program_strategy = st.lists(st.tuples(st.integers(0, 3), st.lists(op_strategy, min_size=1, max_size=3)), min_size=1, max_size=25)


def apply_model(model: dict, next_id: int, ops: list[dict]) -> tuple[dict, int]:
    """Reference semantics: atomic op lists on a plain dict; ids must name memories that
    existed before the list and were not deleted earlier in it."""
    new, nid, deleted = dict(model), next_id, set()
    for op in ops:
        if op["op"] in ("UPDATE", "DELETE") and (op["id"] not in model or op["id"] in deleted):
            return model, next_id
        if op["op"] == "ADD":
            new[f"m{nid}"] = op["text"].strip()
            nid += 1
        elif op["op"] == "UPDATE":
            new[op["id"]] = op["text"].strip()
        elif op["op"] == "DELETE":
            deleted.add(op["id"])
            del new[op["id"]]
    return new, nid


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program_strategy, st.lists(st.integers(0, 24), min_size=3, max_size=3))
def test_forks_never_share_state(program, fork_points):
    root = MemorySessionEnv(source=LongSource(40))
    root.reset(seed=0)
    envs = [root]
    models = [({}, 0)]
    for step, (which, ops) in enumerate(program):
        # forks are created from the root at the chosen steps, at an extract turn
        for fp in fork_points:
            if fp == step and len(envs) < 4:
                envs.append(root.fork())
                models.append(models[0])
        k = which % len(envs)
        env = envs[k]
        if env.done:
            continue
        env.step("[]")  # extract: no facts
        env.step(json.dumps({"operations": ops}))  # manage
        models[k] = apply_model(*models[k], ops)
        for env_i, (model, next_id) in zip(envs, models):
            assert {e.id: e.text for e in env_i.memory} == model
            assert env_i.memory.next_id == f"m{next_id}"


ROLE_STEPS = {"extract": [], "manage": ['{"facts": ["Alice lives in Paris."]}'],
              "answer": ['{"facts": []}', '{"operations": [{"op": "ADD", "text": "Bob works as a nurse."}]}']}

nasty = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * (n // 2)),
    st.integers(1, 5000).map(lambda n: '{"operations": ' + "[" * n),
    st.sampled_from(['{"operations": [{"op": "DELETE", "id": "m0"}, {"op": "DELETE", "id": "m0"}]}',
                     '{"facts": [1, 2, 3]}', '{"facts": null}', "```json\n{]\n```", '{"operations": [{"op": "UPDATE"}]}',
                     "x" * 250_000, '{"facts": ["' + "y" * 5000 + '"]}', "\x00\ud800", "null", "[]", "{}"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(ROLE_STEPS)), nasty)
def test_no_action_string_raises_and_invalid_actions_change_nothing(role, action):
    env = MemorySessionEnv(source=TinySource())
    env.reset(seed=0)
    for a in ROLE_STEPS[role]:
        env.step(a)
    assert env.role == role
    before = env.memory.to_dict()
    _, reward, _, _, info = env.step(action)
    assert isinstance(reward, float)
    if not info["valid"]:
        assert env.memory.to_dict() == before and isinstance(info["error"], str) and reward < 0
