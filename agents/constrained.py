"""Grammar-constrained actions with exact log-probs: valid extract, manage and answer outputs
by construction, and the PPO/GRPO log-probs of the distribution that was really sampled.

Each observation gets a grammar built from what it shows (:func:`grammar_for`):

* extract: ``{"facts": ["...", ...]}``, at most :data:`memenv.parsing.MAX_FACTS` facts;
* manage: ``{"operations": [...]}`` where every ``op`` is ADD / UPDATE / DELETE / NOOP, every
  ``id`` is one of the memory ids of this observation (an enum: no id can be invented),
  every ``fact`` index (the ADD / UPDATE shorthand) is below the number of facts shown, texts
  are non-blank, and DELETEs come last in the order the ids are shown, each id at most once,
  so that no operation can name a memory deleted earlier in the list (the environment
  rejects that). Every list of operations the environment accepts has a reordering of this
  form with the same effect on the memory bank. ``manage_ops`` narrows the operations the
  grammar offers (e.g. ``("ADD", "NOOP")``: an add-only memory whose contents are learned);
* answer: ``Relevant: m3, m7`` (ids of this observation) then ``Answer: <non-blank line>``
  (``Answer: ...`` alone without memory distillation).

Outputs also fit the generation budget: each text is a rule of at most
:data:`TEXT_TOKENS` tokens (``max_tokens`` in the grammar), and the number of facts,
operations and relevant ids is bounded so that the longest output, counting one token per
byte of the fixed syntax (no tokenizer has a token shorter than a byte), ends with its stop
token within ``max_new_tokens``. A random, untrained model therefore only emits actions the
environment accepts. Below the smallest budget that holds one item the grammar still
applies, but the output may be cut off.

Exact RL
--------
The recorded log-prob of a sampled token is under the constrained, renormalised
distribution: logits outside the grammar's mask are set to -inf, then log-softmax at the
sampling temperature (top-k / top-p still only shape the draw, as without a grammar). The
mask at step t is a function of the completion's first t tokens only (the grammar text
encodes the budget), so training recomputes it exactly by replaying the grammar over the
sampled tokens (:func:`replay_masks`), for the policy and for the reference policy of the
KL alike, and the entropy bonus is the entropy of the masked distribution too. Sampling-time
and training-time log-probs then agree to the dtype's tolerance and the first PPO ratio is
1. The alternative -- log-probs of the unmasked model -- would make the importance ratio
and the KL refer to a distribution no token was drawn from (and tokens outside the mask,
which the sampler cannot produce, would still carry gradient mass).

Library: llguidance
-------------------
Measured on this 2-core CPU with a manage grammar (25-id enum, fact index, texts), the
SmolLM2-135M tokenizer (49,152 tokens) and the tiny byte-level one (259):

============  =======================  ===================  ==============================
library       install (``--no-deps``)  compile / mask       token masks
============  =======================  ===================  ==============================
llguidance    3 MB wheel, no deps,     2 ms / 33-36 us per  exact on both tokenizers; fixed
1.9.1         MIT, 1.x stable API      token and sequence   text only in its canonical tokens
xgrammar      1.3 MB + torch,          3-10 ms / 3-7 us     allowed raw control bytes and
0.2.9         transformers, pydantic,                       special tokens inside JSON
              triton, apache-tvm-ffi                        strings on the tiny tokenizer
                                                            (text ``json.loads`` rejects)
outlines-core 2.3 MB, no deps,         0.5 s (tiny) / 15 s  regex only (no CFG: no
0.2.14        Apache-2.0               (SmolLM2) per        ordered DELETE chain)
                                       grammar
============  =======================  ===================  ==============================

llguidance is chosen: no dependency to pin, a stable API, lark grammars with a per-rule
``max_tokens`` (the budget guarantee above), masks that were right on both tokenizers, and
a per-token cost far below a decode step of any real model. With this module's grammars on
SmolLM2's tokenizer a mask takes 4 us (extract) to 9 us (manage, 25 ids) at the median, at
most ~2 ms the first time a lexer state is met; ``python -m benchmarks.constrained_speed``
measured SmolLM2-135M (bf16, 2 CPU threads, 16 sequences) at 188 tok/s constrained against
191 tok/s free for the same number of decode steps (0.99), the tiny model at 0.96.
xgrammar's faster masks do not pay for its dependencies and its wrong string masks;
outlines-core compiles a token index per grammar, too slow for one grammar per observation.

Caching: the lark text of a grammar depends only on the role, the ids, the number of facts
and the budget, so repeated structures (every extract observation, managers with the same
ids) reuse one compiled matcher, deep-copied per sequence (:func:`compiled_matcher`).
Compile cost, measured: extract and answer grammars 1-2 ms; manage grammars 1.5 ms without
ids, 23-47 ms with 25 ids and 58-77 ms with 59 ids (a rule per id and budget step); the
llguidance tokenizer is built once per tokenizer (0.4 s for SmolLM2, 8 ms for tiny).
"""

from __future__ import annotations

import functools
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from agents.prompts import ANSWER, EXTRACT, MANAGE, ROLES
from memenv.parsing import MAX_FACTS, MAX_OPERATIONS, OPS
# Tokens per fact / memory text, and per short answer. 48: dated dialogue facts are long --
# the add-only teacher's facts on LoCoMo's training conversations are 31 / 40 / 64 SmolLM2
# tokens (median / p90 / max), and at 32 the grammar cut 41% of them before their date stamp.
TEXT_TOKENS = 48
ANSWER_TOKENS = 16
# Relevant ids an answer may list, at most.
MAX_RELEVANT_IDS = 8
# Compiled matchers kept (one per distinct grammar text and tokenizer).
MATCHER_CACHE_SIZE = 512
# The manage grammar tracks the budget left in this many steps (a rule per step and id);
# every operation costs at least one step, so a list never exceeds the parser's limit.
BUDGET_STEPS = 32
assert BUDGET_STEPS <= MAX_OPERATIONS

# JSON string content without escapes or control characters, with a non-blank character
# (the environment strips texts and refuses empty ones).
_TEXT_RE = r'/[^"\\\x00-\x1f]*[^"\\\x00-\x1f ][^"\\\x00-\x1f]*/'
# One line whose answer survives parse_answer's stripping of blanks, quotes, ` and *.
_ANSWER_RE = r"/[^\x00-\x1f]*[^\x00-\x1f \"'`*][^\x00-\x1f]*/"
TEXT_END = '"}'
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _lit(text: str) -> str:
    """A lark string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def _repeat(rule: str, count: int) -> str:
    """Lark for 1 to ``count`` of ``rule`` separated by ", "."""
    return rule if count == 1 else f'({rule} (", " {rule}){{0,{count - 1}}})'


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class Constraint:
    """The grammar one observation's output must follow (hashable; what training replays).

    Attributes:
        role: the role the grammar is for.
        lark: the grammar, in llguidance's lark syntax.
        max_tokens: the longest output the grammar allows, stop token included (counting
            one token per byte of fixed syntax); at most the budget when it fits.
        tokenizer, stop_ids: the tokenizer and stop tokens the grammar was sampled with
            (set by :meth:`bind`; a replay needs them).
    """

    role: str
    lark: str
    max_tokens: int
    tokenizer: Any = field(default=None, compare=False, repr=False)
    stop_ids: tuple[int, ...] = field(default=(), compare=False)

    def bind(self, tokenizer, stop_ids: Sequence[int]) -> "Constraint":
        """This grammar for sampling with ``tokenizer``, ending at any of ``stop_ids``."""
        return replace(self, tokenizer=tokenizer, stop_ids=tuple(int(i) for i in stop_ids))


# ------------------------------------------------------------------------- grammars


def _memory_ids(obs: dict) -> list[str]:
    """The ids of the memories an observation shows, in order, once each, usable in a grammar."""
    ids = []
    for memory in obs.get("memories") or []:
        memory_id = memory.get("id") if isinstance(memory, dict) else None
        if isinstance(memory_id, str) and _PLAIN_ID.match(memory_id) and memory_id not in ids:
            ids.append(memory_id)
    return ids


def extract_grammar(budget: int, *, text_tokens: int = TEXT_TOKENS) -> Constraint:
    """``{"facts": [...]}`` with as many facts of at most ``text_tokens`` tokens as fit ``budget``."""
    head, tail = '{"facts": [', "]}"
    fixed = _nbytes(head) + _nbytes(tail) + 1  # + the stop token
    per_fact = 4  # two quotes and ", "
    text_tokens = max(1, min(text_tokens, budget - fixed - per_fact))
    count = max(1, min(MAX_FACTS, (budget - fixed + 2) // (text_tokens + per_fact)))
    lark = "\n".join([
        f"start: {_lit(head)} {_repeat('fact', count)}? {_lit(tail)}",
        f'fact: "\\"" text "\\""',
        f"text[max_tokens={text_tokens}]: {_TEXT_RE}",
    ])
    return Constraint(EXTRACT, lark, fixed + count * (text_tokens + per_fact) - 2)


def check_manage_ops(ops: Sequence[str] | str | None, *, constrained: bool = True) -> tuple[str, ...]:
    """``ops`` as the manager operations a grammar may offer, in the order of
    :data:`memenv.parsing.OPS` (None: all four). ``"ADD/NOOP"`` (the agent spec's form) and
    lower case are read too. ``ValueError`` naming the bad entry for an unknown operation or
    an empty set, and for a narrowed set without ``constrained`` sampling (only the grammar
    keeps the other operations out)."""
    if ops is None:
        return OPS
    items = ops.split("/") if isinstance(ops, str) else list(ops)
    names = [str(op).strip().upper() for op in items]
    unknown = [op for op, name in zip(items, names) if name not in OPS]
    if unknown or not names:
        raise ValueError(f"manager operations must be a non-empty set of {', '.join(OPS)}, got "
                         f"{'/'.join(map(str, items)) if items else 'none'}" + (f" ({unknown[0]!r} is not one)" if unknown else ""))
    allowed = tuple(op for op in OPS if op in names)
    if not constrained and allowed != OPS:
        raise ValueError(f"manage_ops {'/'.join(allowed)} needs constrained sampling: only the manage grammar keeps "
                         "the other operations out")
    return allowed


@dataclass(frozen=True)
class _ManageBudget:
    """The manage grammar's budget arithmetic: ``steps`` steps of ``unit`` tokens, each
    operation kind costing ``cost[kind]`` steps (DELETE ``del_steps``)."""

    fixed: int
    sep: int
    steps: int
    unit: int
    cost: dict[str, int]
    del_steps: int
    text_tokens: int


_MANAGE_HEAD, _MANAGE_TAIL = '{"operations": [', "]}"


def _manage_budget(ids: Sequence[str], num_facts: int, budget: int, text_tokens: int,
                   allowed: Sequence[str]) -> _ManageBudget:
    fixed = _nbytes(_MANAGE_HEAD) + _nbytes(_MANAGE_TAIL) + 1
    longest_id = max((_nbytes(i) for i in ids), default=0)
    index_digits = len(str(max(num_facts - 1, 0)))
    text_tokens = max(1, min(text_tokens, budget - fixed - 40 - longest_id))
    sep = 2
    kinds: dict[str, int] = {"noop": _nbytes('{"op": "NOOP"}') + sep,
                             "add_text": _nbytes('{"op": "ADD", "text": ""}') + text_tokens + sep}
    if num_facts > 0:
        kinds["add_fact"] = _nbytes('{"op": "ADD", "fact": }') + index_digits + sep
    if ids:
        kinds["update_text"] = _nbytes('{"op": "UPDATE", "id": "", "text": ""}') + longest_id + text_tokens + sep
        if num_facts > 0:
            kinds["update_fact"] = _nbytes('{"op": "UPDATE", "id": "", "fact": }') + longest_id + index_digits + sep
    delete_cost = _nbytes('{"op": "DELETE", "id": ""}') + longest_id + sep
    room = budget - fixed + sep  # the last operation has no ", "
    if room < min(kinds.values()):
        room = min(kinds.values())  # too small a budget: one operation, possibly cut off
    unit = max(1, -(-room // BUDGET_STEPS))  # tokens per budget step (ceil)
    offered = {"noop": "NOOP", "add_text": "ADD", "add_fact": "ADD", "update_text": "UPDATE", "update_fact": "UPDATE"}
    cost = {k: -(-c // unit) for k, c in kinds.items() if offered[k] in allowed}
    return _ManageBudget(fixed, sep, room // unit, unit, cost, -(-delete_cost // unit), text_tokens)


def manage_capacity(num_facts: int, budget: int, *, ids: Sequence[str] = (), ops: Sequence[str] | None = None) -> int:
    """The most facts one manage output can ADD (or UPDATE into) by index within ``budget``
    new tokens: the grammar prices every token of fixed syntax as a byte (so an output never
    overruns the budget), about 27 per ``{"op": "ADD", "fact": 12}``. A manage turn with more
    facts than this can keep only this many of them (0: no index operation is offered)."""
    allowed = check_manage_ops(ops)
    b = _manage_budget(list(dict.fromkeys(ids)), num_facts, budget, TEXT_TOKENS, allowed)
    per_fact = min((b.cost[k] for k in ("add_fact", "update_fact") if k in b.cost), default=0)
    return b.steps // per_fact if per_fact else 0


def manage_grammar(ids: Sequence[str], num_facts: int, budget: int, *, text_tokens: int = TEXT_TOKENS,
                   ops: Sequence[str] | None = None) -> Constraint:
    """``{"operations": [...]}`` over the memory ids ``ids`` and ``num_facts`` extracted facts.

    Body operations (ADD / UPDATE / NOOP, in any order and number) come first, then DELETEs
    in the order of ``ids``, each id at most once. The budget left is tracked in
    :data:`BUDGET_STEPS` steps: each operation costs its longest rendering (fixed syntax
    byte for byte, plus ``text_tokens`` per text, plus the ", " before the next one).
    ``ops``: the operations offered (:func:`check_manage_ops`; default all four); the others
    cannot be generated, and the budget steps stay those of the full grammar.
    """
    allowed = check_manage_ops(ops)
    ids = list(dict.fromkeys(ids))
    head, tail = _MANAGE_HEAD, _MANAGE_TAIL
    budget_of = _manage_budget(ids, num_facts, budget, text_tokens, allowed)
    fixed, sep, steps, unit = budget_of.fixed, budget_of.sep, budget_of.steps, budget_of.unit
    cost, del_steps, text_tokens = budget_of.cost, budget_of.del_steps, budget_of.text_tokens
    delete_ids = ids if "DELETE" in allowed else []

    noop, add_text, add_fact = _lit('{"op": "NOOP"}'), _lit('{"op": "ADD", "text": "'), _lit('{"op": "ADD", "fact": ')
    update, with_text, with_fact = _lit('{"op": "UPDATE", "id": "'), _lit('", "text": "'), _lit('", "fact": ')
    text_end, close, comma = _lit(TEXT_END), _lit("}"), _lit(", ")
    rules = [f"start: {_lit(head)} seq_{steps}? {_lit(tail)}"]  # replaced below
    if "noop" in cost:
        rules.append(f"noop: {noop}")
    if "add_text" in cost or "update_text" in cost:
        rules.append(f"text[max_tokens={text_tokens}]: {_TEXT_RE}")
    if "add_text" in cost:
        rules.append(f"add_text: {add_text} text {text_end}")
    if "add_fact" in cost or "update_fact" in cost:
        rules.append("index: " + " | ".join(_lit(str(i)) for i in range(num_facts)))
    if "add_fact" in cost:
        rules.append(f"add_fact: {add_fact} index {close}")
    if "update_text" in cost or "update_fact" in cost:
        rules.append("mid: " + " | ".join(_lit(i) for i in ids))
    if "update_text" in cost:
        rules.append(f"update_text: {update} mid {with_text} text {text_end}")
    if "update_fact" in cost:
        rules.append(f"update_fact: {update} mid {with_fact} index {close}")
    for j, memory_id in enumerate(delete_ids):
        rules.append(f"del_{j}: " + _lit('{"op": "DELETE", "id": "' + memory_id + '"}'))

    made: set[str] = set()
    fits: dict[str, bool] = {}

    def dels(j: int, left: int) -> str | None:
        """The rule for increasing DELETEs from id j on, within ``left`` steps (None: none fit)."""
        if j >= len(delete_ids) or left < del_steps:
            return None
        name = f"dels_{j}_{left}"
        if name not in made:
            made.add(name)
            alts = [f"del_{j}"]
            after = dels(j + 1, left - del_steps)
            if after:
                alts.append(f"del_{j} {comma} {after}")
            skip = dels(j + 1, left)
            if skip:
                alts.append(skip)
            rules.append(f"{name}: " + " | ".join(alts))
        return name

    def seq(left: int) -> str | None:
        """The rule for a non-empty operation list within ``left`` steps (None: none fits)."""
        name = f"seq_{left}"
        if name not in fits:
            fits[name] = False
            alts = []
            for kind, c in cost.items():
                if c <= left:
                    alts.append(kind)
                    rest = seq(left - c)
                    if rest:
                        alts.append(f"{kind} {comma} {rest}")
            tail_dels = dels(0, left)
            if tail_dels:
                alts.append(tail_dels)
            if alts:
                fits[name] = True
                rules.append(f"{name}: " + " | ".join(alts))
        return name if fits[name] else None

    first = seq(steps)
    rules[0] = f"start: {_lit(head)} {first + '? ' if first else ''}{_lit(tail)}"
    return Constraint(MANAGE, "\n".join(rules), fixed - sep + steps * unit)


def answer_grammar(ids: Sequence[str], budget: int, *, distill: bool = True,
                   answer_tokens: int = ANSWER_TOKENS) -> Constraint:
    """``Relevant: <ids of this observation>\\nAnswer: <line>`` (``Answer: <line>`` without ``distill``)."""
    ids = list(dict.fromkeys(ids))
    answer_head = "Answer: "
    if not distill:
        fixed = _nbytes(answer_head) + 1
        answer_tokens = max(1, min(answer_tokens, budget - fixed))
        lark = f"start: {_lit(answer_head)} answer\nanswer[max_tokens={answer_tokens}]: {_ANSWER_RE}"
        return Constraint(ANSWER, lark, fixed + answer_tokens)
    relevant_head, between = "Relevant: ", "\nAnswer: "
    fixed = _nbytes(relevant_head) + _nbytes(between) + 1
    answer_tokens = max(1, min(answer_tokens, budget - fixed))
    per_id = max((_nbytes(i) for i in ids), default=0) + 2
    count = min(len(ids), MAX_RELEVANT_IDS, max(0, (budget - fixed - answer_tokens + 2) // per_id)) if ids else 0
    rules = [f"answer[max_tokens={answer_tokens}]: {_ANSWER_RE}"]
    if count:
        rules.append("rid: " + " | ".join(_lit(i) for i in ids))
        rules.insert(0, f"start: {_lit(relevant_head)} {_repeat('rid', count)}? {_lit(between)} answer")
    else:
        rules.insert(0, f"start: {_lit(relevant_head + between)} answer")
    return Constraint(ANSWER, "\n".join(rules), fixed + answer_tokens + max(0, count * per_id - 2))


def grammar_for(obs: dict, role: str, *, max_new_tokens: int, distill: bool = True,
                manage_ops: Sequence[str] | None = None) -> Constraint:
    """The grammar of an observation's output in ``role`` within ``max_new_tokens`` tokens
    (``manage_ops``: the operations a manage output may use, default all four)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if role == EXTRACT:
        return extract_grammar(max_new_tokens)
    if role == MANAGE:
        return manage_grammar(_memory_ids(obs), len(obs.get("facts") or []), max_new_tokens, ops=manage_ops)
    if role == ANSWER:
        return answer_grammar(_memory_ids(obs), max_new_tokens, distill=distill)
    raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")


# ------------------------------------------------------------------ matchers and masks


def _llguidance():
    try:
        import llguidance
        import llguidance.hf  # noqa: F401
    except ImportError:
        raise ImportError("constrained decoding needs llguidance: pip install 'llguidance>=1.9' "
                          "(or turn constraints off)") from None
    return llguidance


_TOKENIZERS: dict[tuple[int, tuple[int, ...]], tuple[object, object]] = {}


def ll_tokenizer(tokenizer, stop_ids: Sequence[int]):
    """The llguidance tokenizer of a Hugging Face fast tokenizer (cached: it takes ~0.4 s),
    with ``stop_ids`` as its end-of-sequence tokens."""
    key = (id(tokenizer), tuple(sorted(int(i) for i in stop_ids)))
    hit = _TOKENIZERS.get(key)
    if hit is None or hit[0] is not tokenizer:
        llg = _llguidance()
        eos = list(key[1]) or [tokenizer.eos_token_id]
        hit = (tokenizer, llg.hf.from_tokenizer(tokenizer, eos_token=eos if len(eos) > 1 else eos[0]))
        _TOKENIZERS[key] = hit
    return hit[1]


_MATCHERS: OrderedDict[tuple, object] = OrderedDict()


def compiled_matcher(constraint: Constraint, tokenizer, stop_ids: Sequence[int]):
    """A fresh matcher for ``constraint`` (a deep copy of a cached, compiled one)."""
    llg = _llguidance()
    ll_tok = ll_tokenizer(tokenizer, stop_ids)
    key = (id(ll_tok), constraint.lark)
    matcher = _MATCHERS.get(key)
    if matcher is None:
        matcher = llg.LLMatcher(ll_tok, llg.LLMatcher.grammar_from_lark(constraint.lark), log_level=0)
        if matcher.is_error():
            raise ValueError(f"invalid {constraint.role} grammar: {matcher.get_error()}")
        _MATCHERS[key] = matcher
        if len(_MATCHERS) > MATCHER_CACHE_SIZE:
            _MATCHERS.popitem(last=False)
    else:
        _MATCHERS.move_to_end(key)
    return matcher.deep_copy()


@functools.lru_cache(maxsize=8)
def _bit_positions(device: torch.device) -> torch.Tensor:
    return torch.arange(32, dtype=torch.int32, device=device)


def unpack_bitmask(bits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(..., W) int32 bitmasks (bit i of word w: token 32 w + i allowed) -> (..., vocab_size) bool."""
    flat = (bits.unsqueeze(-1) >> _bit_positions(bits.device)) & 1  # (..., W, 32)
    allowed = flat.reshape(*bits.shape[:-1], -1).bool()
    if allowed.shape[-1] >= vocab_size:
        return allowed[..., :vocab_size]
    pad = allowed.new_zeros(*allowed.shape[:-1], vocab_size - allowed.shape[-1])
    return torch.cat([allowed, pad], dim=-1)


def _fill(matcher, bits: torch.Tensor, row: int) -> None:
    row_view = bits[row]
    matcher.unsafe_compute_mask_ptr(row_view.data_ptr(), row_view.numel() * row_view.element_size())
    if matcher.is_error():
        raise RuntimeError(f"grammar matcher failed: {matcher.get_error()}")


class ConstrainedDecoder:
    """The grammar masks of a batch of sequences during :func:`agents.generation.generate`.

    ``constraints`` has one entry per sequence (None: unconstrained). Call :meth:`mask`
    before each draw and :meth:`advance` with the drawn tokens.
    """

    def __init__(self, constraints: Sequence[Constraint | None], tokenizer, stop_ids: Sequence[int]) -> None:
        self.rows = [i for i, c in enumerate(constraints) if c is not None]
        self.matchers = {i: compiled_matcher(constraints[i], tokenizer, stop_ids) for i in self.rows}
        width = mask_width(tokenizer, stop_ids)
        self.bits = torch.full((len(constraints), width), -1, dtype=torch.int32)

    def mask(self, logits: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, V) with tokens outside each constrained, unfinished row's grammar at -inf."""
        done = finished.tolist()
        active = [i for i in self.rows if not done[i]]
        if not active:
            return logits
        for i in active:
            _fill(self.matchers[i], self.bits, i)
        if len(active) == logits.shape[0]:  # every row constrained and running: no gather / scatter
            return logits.masked_fill(~unpack_bitmask(self.bits.to(logits.device), logits.shape[-1]), float("-inf"))
        allowed = unpack_bitmask(self.bits[active].to(logits.device), logits.shape[-1])  # (a, V)
        index = torch.as_tensor(active, device=logits.device)
        logits = logits.clone()
        logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
        return logits

    def advance(self, tokens: torch.Tensor, finished: torch.Tensor) -> None:
        """Feed each constrained, unfinished row its drawn token."""
        done, drawn = finished.tolist(), tokens.tolist()
        for i in self.rows:
            if not done[i] and not self.matchers[i].consume_token(drawn[i]):
                raise RuntimeError(f"grammar matcher refused token {drawn[i]}: {self.matchers[i].get_error()}")


def mask_width(tokenizer, stop_ids: Sequence[int]) -> int:
    """32-bit words per token mask of ``tokenizer``."""
    return (ll_tokenizer(tokenizer, stop_ids).vocab_size + 31) // 32


def replay_masks(constraints: Sequence[Constraint | None], completions: Sequence[Sequence[int]],
                 length: int) -> torch.Tensor | None:
    """The masks the sampler used, recomputed: (N, length, W) int32 bitmasks, or None when
    no row is constrained.

    Row i, step t holds the grammar's mask after the first t tokens of ``completions[i]``
    (all bits set for unconstrained rows and after the completion ends). Constraints must
    be bound (:meth:`Constraint.bind`), as :func:`agents.generation.generate` returns them.
    Unpack with :func:`unpack_bitmask`.
    """
    bound = [c for c in constraints if c is not None]
    if not bound:
        return None
    if any(c.tokenizer is None for c in bound):
        raise ValueError("replay_masks needs bound constraints (Constraint.bind), as generate() returns them")
    width = max(mask_width(c.tokenizer, c.stop_ids) for c in bound)
    bits = torch.full((len(constraints), length, width), -1, dtype=torch.int32)
    for i, (constraint, tokens) in enumerate(zip(constraints, completions)):
        if constraint is None:
            continue
        matcher = compiled_matcher(constraint, constraint.tokenizer, constraint.stop_ids)
        for t, token in enumerate(tokens):
            _fill(matcher, bits[i], t)
            if not matcher.consume_token(int(token)) and t < len(tokens) - 1:
                raise ValueError(f"completion {i} leaves its {constraint.role} grammar at token {t} ({token}): "
                                 "it was not sampled under this constraint")
    return bits
