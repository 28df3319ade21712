"""Two leaderboard rows' final memories side by side, session by session; no model runs.

    python -m benchmarks.leaderboard.memory_diff --a runs/study/eval/grpo_addnoop-seed0.json \\
        --b runs/study/eval/add-only.json --sessions 1 2 --samples 5

Each side is a leaderboard JSON written with ``--save-memory`` (``FILE`` or ``FILE#ROW``, as
``benchmarks.leaderboard.compare`` takes them). Entries are matched by their text (whitespace
collapsed) within each conversation both rows played; for every session (the session an entry
was written in) the table counts A's entries, B's, those both keep, and those only one keeps,
e.g. the facts a trained manager dropped from the add-only memory it was given. Then, for the
``--sessions`` chosen, up to ``--samples`` entries kept only by A beside those kept only by B.

The texts are the data's: ``--no-texts`` prints and writes the counts alone (what may be
published for a licensed data set such as LoCoMo); ``--out`` writes OUT.json and OUT.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from algos.cli import UserError, check_range, parse_args, run_main
from benchmarks.leaderboard.compare import read_row

PROG = "python -m benchmarks.leaderboard.memory_diff"


@dataclass
class MemoryDiffArgs:
    """The command line."""

    a: str = field(default="", metadata={"help": "leaderboard JSON (FILE or FILE#ROW) written with --save-memory: system A"})
    b: str = field(default="", metadata={"help": "the same for system B, e.g. the add-only baseline"})
    sessions: tuple[int, ...] = field(default=(), metadata={"help": "sessions whose differing entries are shown, numbered from 1 as LoCoMo's session_1 ... (none: counts only)"})
    samples: int = field(default=5, metadata={"help": "entries shown per side and session"})
    texts: bool = field(default=True, metadata={"help": "show entry texts (--no-texts: counts only, safe to publish for licensed data)"})
    out: str | None = field(default=None, metadata={"help": "output prefix: writes OUT.json and OUT.md (none: print only)"})

    def __post_init__(self) -> None:
        if not self.a or not self.b:
            raise ValueError("--a and --b are both needed (leaderboard JSON files written with --save-memory)")
        check_range("samples", self.samples, low=0)
        if any(s < 1 for s in self.sessions):
            raise ValueError(f"--sessions are 1-based session numbers, got {list(self.sessions)}")


def memories(spec: str) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """A row's label and its final memory records per conversation id."""
    row = read_row(spec)
    convs = row.get("conversations") or []
    if not convs or any("memory" not in c for c in convs):
        raise UserError(f"{spec}: the row kept no memory (run the leaderboard with --save-memory)")
    return row["row"], {c["conversation"]: c["memory"] for c in convs}


def _key(text: str) -> str:
    return " ".join(str(text).split())


def _unmatched(entries: Sequence[dict[str, Any]], surplus: Counter) -> list[dict[str, Any]]:
    """The first ``surplus[text]`` entries of each text, in order: those the other side lacks."""
    left, chosen = Counter(surplus), []
    for e in entries:
        if left[_key(e["text"])] > 0:
            left[_key(e["text"])] -= 1
            chosen.append(e)
    return chosen


def diff(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per session, numbered from 1 as LoCoMo names them (the records count from 0): counts of A's
    and B's entries, shared ones (as a multiset of texts), and the entries only A or only B keeps."""
    out: dict[int, dict[str, Any]] = {}
    for session in sorted({int(e["session"]) for e in [*a, *b]}):
        ea = [e for e in a if int(e["session"]) == session]
        eb = [e for e in b if int(e["session"]) == session]
        ca, cb = Counter(_key(e["text"]) for e in ea), Counter(_key(e["text"]) for e in eb)
        out[session + 1] = {"a": len(ea), "b": len(eb), "shared": sum((ca & cb).values()),
                            "only_a": _unmatched(ea, ca - cb), "only_b": _unmatched(eb, cb - ca)}
    return out


def memory_diff(args: MemoryDiffArgs) -> dict[str, Any]:
    """The per-conversation, per-session comparison (texts left out with --no-texts)."""
    label_a, mem_a = memories(args.a)
    label_b, mem_b = memories(args.b)
    common = [c for c in mem_a if c in mem_b]
    if not common:
        raise UserError(f"the rows played no conversation in common (A: {sorted(mem_a)}, B: {sorted(mem_b)})")
    result: dict[str, Any] = {"a": {"spec": args.a, "row": label_a}, "b": {"spec": args.b, "row": label_b},
                              "conversations": {}}
    for conv in common:
        sessions = diff(mem_a[conv], mem_b[conv])
        rows = {}
        for session, d in sessions.items():
            row = {k: d[k] for k in ("a", "b", "shared")} | {"only_a": len(d["only_a"]), "only_b": len(d["only_b"])}
            if args.texts and session in args.sessions:
                row["samples_only_a"] = [e["text"] for e in d["only_a"][:args.samples]]
                row["samples_only_b"] = [e["text"] for e in d["only_b"][:args.samples]]
            rows[session] = row
        result["conversations"][conv] = rows
    return result


def to_markdown(result: dict[str, Any]) -> str:
    """A count table per conversation, then the chosen sessions' entries side by side."""
    a, b = result["a"]["row"], result["b"]["row"]
    lines = [f"# Final memories: A = {a}, B = {b}", ""]
    for conv, rows in result["conversations"].items():
        total = {k: sum(r[k] for r in rows.values()) for k in ("a", "b", "shared", "only_a", "only_b")}
        lines += [f"## {conv}", "", "| session | A | B | both | only A | only B |", "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {s} | {r['a']} | {r['b']} | {r['shared']} | {r['only_a']} | {r['only_b']} |" for s, r in rows.items()]
        lines += [f"| all | {total['a']} | {total['b']} | {total['shared']} | {total['only_a']} | {total['only_b']} |", ""]
        for s, r in rows.items():
            if "samples_only_a" not in r:
                continue
            lines += [f"### {conv}, session {s}", "", "| only in A | only in B |", "|---|---|"]
            left, right = r["samples_only_a"], r["samples_only_b"]
            for i in range(max(len(left), len(right))):
                cell = lambda xs: xs[i].replace("|", "\\|") if i < len(xs) else ""  # noqa: E731
                lines.append(f"| {cell(left)} | {cell(right)} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare, print the markdown, and write ``--out`` files; returns the result."""
    args = parse_args(MemoryDiffArgs, argv, description=__doc__, prog=PROG)
    result = memory_diff(args)
    text = to_markdown(result)
    print(text)
    if args.out:
        from algos.run import write_json_atomically

        write_json_atomically(Path(f"{args.out}.json"), result)
        Path(f"{args.out}.md").write_text(text, encoding="utf-8")
        print(f"wrote {args.out}.json and {args.out}.md")
    return result


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
