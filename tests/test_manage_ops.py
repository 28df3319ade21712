"""Narrowing the manager's operations (``--manage-ops ADD NOOP``, ``?manage_ops=ADD/NOOP``): the
grammar offers no other operation, the trainer records the set with every saved adapter, and
an adapter is served by its path alone under the set it was trained with."""

from __future__ import annotations

import json
import re

import pytest

from agents.backbone import tiny_backbone
from agents.llm_agent import LLMAgent
from algos import logo_grpo
from tests.helpers_run import TINY

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _ops_sampled(agent, samples=64) -> set[str]:
    """The operation names of ``samples`` manage outputs for one observation showing a memory."""
    from tests.test_llm_agent import OBSERVATIONS

    manage = next(o for o in OBSERVATIONS if json.loads(o)["role"] == "manage")
    return {op for g in agent.sampler.sample([manage], num_samples=samples)[0]
            for op in re.findall(r'"op": "([A-Z]+)"', g.text)}


def _sampling_agent(**kwargs) -> LLMAgent:
    return LLMAgent(tiny_backbone(seed=0), temperature=1.0, seed=0, batch_size=64,
                    max_new_tokens={"extract": 96, "manage": 128, "answer": 16}, **kwargs)


def test_an_add_noop_manager_never_updates_or_deletes():
    assert {"UPDATE", "DELETE"} <= _ops_sampled(_sampling_agent())  # the untrained model samples all four
    assert _ops_sampled(_sampling_agent(manage_ops=("ADD", "NOOP"))) == {"ADD", "NOOP"}
    assert _ops_sampled(_sampling_agent(manage_ops="NOOP")) == {"NOOP"}
    with pytest.raises(ValueError, match="manage_ops ADD/NOOP needs constrained sampling"):
        _sampling_agent(manage_ops="ADD/NOOP", constrained=False)


def test_the_trainer_records_the_operations_and_the_adapter_is_served_under_them(tmp_path):
    logo_grpo.main([*TINY, "--stages", "2", "--updates-per-stage", "1", "--manage-ops", "noop", "ADD",
                    "--output-dir", str(tmp_path)])
    checkpoint = tmp_path / "checkpoints" / "update-000001" / "adapters" / "policy"
    for folder in (tmp_path / "adapter", checkpoint):
        assert json.loads((folder / "memenv_adapter.json").read_text())["manage_ops"] == ["ADD", "NOOP"]
    served = LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'adapter'}")
    assert served.manage_ops == ("ADD", "NOOP") and served.sampler.manage_ops == ("ADD", "NOOP")
    assert LLMAgent.from_spec(f"llm:tiny:{checkpoint}?manage_ops=ADD/UPDATE/DELETE/NOOP").manage_ops == (
        "ADD", "UPDATE", "DELETE", "NOOP")  # the spec option wins over the recorded set
    assert LLMAgent.from_spec(f"llm:tiny:{checkpoint}?constrained=false").manage_ops == (
        "ADD", "UPDATE", "DELETE", "NOOP")  # unconstrained sampling offers every operation
    assert json.loads((tmp_path / "args.json").read_text())["manage_ops"] == ["ADD", "NOOP"]


def test_an_adapter_saved_with_every_operation_records_none(tmp_path):
    from agents.lora import add_lora, save_adapter

    model = add_lora(tiny_backbone(seed=0), r=4)
    save_adapter(model, tmp_path, "policy", manage_ops=("ADD", "UPDATE", "DELETE", "NOOP"))
    assert "manage_ops" not in json.loads((tmp_path / "memenv_adapter.json").read_text())


def test_a_bad_spec_option_is_one_line():
    with pytest.raises(ValueError, match="manage_ops manager operations must be a non-empty set"):
        LLMAgent.from_spec("llm:tiny?manage_ops=ADD/MOVE")
