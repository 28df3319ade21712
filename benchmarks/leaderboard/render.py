"""The leaderboard's outputs: the markdown document (command, date, machine, protocol notes,
table) and the rich table on the terminal."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from memenv.data.locomo import LOCOMO_KINDS

from benchmarks.leaderboard.evaluation import QA_SCHEDULE

LOCOMO_CATEGORY = {kind: number for number, kind in LOCOMO_KINDS.items()}


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
                            "cpu_count": os.cpu_count()}
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def _kind_label(kind: str, locomo: bool) -> str:
    if locomo and kind in LOCOMO_CATEGORY:
        return f"{LOCOMO_CATEGORY[kind]} {kind}"
    return kind


def _columns(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the leaderboard table (scores in percent)."""
    rows = results["rows"]
    locomo = results["settings"]["locomo_metrics"]
    judged = results["settings"]["judge"] is not None
    kinds = list(dict.fromkeys(k for row in rows for k in row["per_kind"]))
    with_em_mem0 = all("em_mem0" in row["overall"] for row in rows)  # absent from results before it existed
    header = ["row", "conv", "questions", "F1", "B1", "EM"] + (["EM-mem0"] if with_em_mem0 else [])
    header += ["LoCoMo-F1"] if locomo else []
    with_r2 = all("by_conversation" in row for row in rows)  # absent from results before they existed
    header += ["R2-F1", "R2-B1"] if with_r2 else []
    header += ["J"] if judged else []
    header += [f"F1 {_kind_label(k, locomo)}" for k in kinds]
    header += ["mem tokens", "mem s/conv", "answer s/q"]
    show_invalid = any(row.get("invalid_memory_actions") for row in rows)
    header += ["invalid mem actions"] if show_invalid else []
    cells = []
    for row in rows:
        overall = row["overall"]
        line = [row["row"], str(row["num_conversations"]), str(row["num_questions"]),
                _pct(overall["f1"]), _pct(overall["bleu1"]), _pct(overall["em"])]
        line += [_pct(overall["em_mem0"])] if with_em_mem0 else []
        line += [_pct(overall["locomo_f1"])] if locomo else []
        line += [_pct(row["by_conversation"]["squad_f1"]), _pct(row["by_conversation"]["squad_bleu1"])] if with_r2 else []
        line += [_pct(overall["j"])] if judged else []
        line += [_pct(row["per_kind"][k]["f1"]) + f" ({row['per_kind'][k]['count']})" if k in row["per_kind"]
                 else "-" for k in kinds]
        line += [f"{row['memory_tokens_mean']:.0f}", _secs(row["memory_seconds_per_conversation"]),
                 _secs(row["answer_seconds_per_question"])]
        if show_invalid:
            line.append(f"{row['invalid_memory_actions']}/{row['memory_actions']}")
        cells.append(line)
    return header, cells


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _secs(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"


def settings_lines(results: dict[str, Any]) -> list[str]:
    """The protocol notes printed above the table."""
    s = results["settings"]
    if s["source"] == "synthetic":
        data = f"synthetic worlds, {s['num_sessions']} sessions, seeds {s['worlds_spec']} ({len(s['conversations'])} worlds)"
    else:
        data = f"{s['source']} `{s['data_path']}`, conversations {', '.join(map(str, s['conversations']))}"
    cap = ("all questions" if s["max_questions"] is None else
           f"at most {s['max_questions']} questions per conversation, evenly spaced over its question list")
    lines = [
        f"- Data: {data}.",
        f"- Protocol: qa_schedule=\"{QA_SCHEDULE}\" (every question after the last session, on the final memory); {cap}"
        + (f"; every session in up to {s['session_chunks']} chunks of turns, each its own extract + manage round."
           if s.get("session_chunks") else "."),
        f"- Answer retrieval: the environment's BM25, top {s['answer_top_k']} memories per speaker. "
        f"`full-context` rows read the most recent {s['context_tokens']} whitespace tokens of the transcript instead.",
        _scores_line(results)
        + (", LoCoMo-F1 = LoCoMo's own stemmed F1" if s["locomo_metrics"] else "")
        + (f", J = LLM-as-a-Judge accuracy, judged by `{s['judge']}`" if s["judge"] else "") + "."
        + (" The JSON's `metric_rules` spells out each rule." if "metric_rules" in results else ""),
        *([_control_line(results["judge_controls"])] if results.get("judge_controls") else []),
        "- Per-kind columns give F1 and (number of questions)"
        + ("; LoCoMo categories by LoCoMo's own numbering: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop "
           "(5 adversarial excluded unless --include-adversarial)." if s["source"] == "locomo" else "."),
        "- mem tokens: whitespace tokens kept in memory at the end, mean per conversation (full-context: the whole "
        "transcript it keeps); mem s/conv: seconds of extract/manage per conversation; answer s/q: seconds per answer"
        + ("; invalid mem actions: extract/manage actions the environment rejected (they change nothing)."
           if any(row.get("invalid_memory_actions") for row in results["rows"]) else "."),
    ]
    lines += [_adapter_line(record) for record in results.get("adapters") or []]
    if s["source"] == "synthetic":
        lines.append("- The `scripted` answerer reads only the synthetic worlds' canonical fact sentences; with raw "
                     "turns or free-form facts (rag-turns, add-only, full-context) it can only answer `unknown`.")
    return lines


def _adapter_line(record: dict[str, Any]) -> str:
    """Where a row's adapter came from: the command that saved it, as it recorded."""
    if not record["commands"]:
        return (f"- Adapter `{record['path']}`: it records no command (saved before adapters recorded theirs, "
                "or by plain peft).")
    made = "; ".join(f"`{c}`" for c in record["commands"])
    return f"- Adapter `{record['path']}`: made by {made}" + (f", saved {record['saved']}." if record["saved"] else ".")


def _scores_line(results: dict[str, Any]) -> str:
    """The start of the note that names each score's rule."""
    if "metric_rules" not in results:  # written before BLEU-1 took the mem0 / A-Mem tokenizer
        return ("- Scores in percent: F1 = mem0-style token F1, B1 = BLEU-1 over lower-cased whitespace tokens, "
                "EM = exact match (equal normalised token lists)")
    return ("- Scores in percent: F1 = mem0 / A-Mem token F1, B1 = mem0 / A-Mem BLEU-1 (nltk word tokens, "
            "punctuation split off), EM = exact match as equal normalised token lists (lower-cased, .,!? dropped), "
            "EM-mem0 = the mem0 / A-Mem exact match (lower-cased strings equal)"
            + ("; R2-F1 / R2-B1 = the official Memory-R2 code's LoCoMo-table F1 and BLEU-1 (SQuAD normalisation, "
               "F1 over token sets, clipped unigram BLEU with brevity penalty), averaged per conversation"
               if all("by_conversation" in row for row in results["rows"]) else ""))


def _rescored_line(rescored: dict[str, Any]) -> str:
    return (f"Re-scored {rescored['date']} from the saved predictions, memory and answers unchanged: "
            f"`{rescored['command']}`. {rescored['note']}")


def _control_line(controls: dict[str, Any]) -> str:
    wrong = controls.get("wrong_judged_wrong")
    return (f"- Judge check on {controls['items']} control items: agreement {_pct(controls['agreement'])}% "
            f"(gold answer judged CORRECT {_pct(controls['gold_judged_correct'])}%, another question's answer "
            f"judged WRONG {'-' if wrong is None else _pct(wrong)}%). A judge that calls everything CORRECT "
            "makes J meaningless.")


def to_markdown(results: dict[str, Any]) -> str:
    """The leaderboard as a markdown document."""
    from benchmarks.provenance import markdown_line

    header, cells = _columns(results)
    machine = results["machine"]
    machine_text = ", ".join(f"{k}={v}" for k, v in machine.items())
    lines = [f"# Leaderboard: {results['title']}", "", "```", results["command"], "```", "",
             f"Date: {results['date']}. Machine: {machine_text}. Total time: {results['total_seconds']:.0f} s.", "",
             markdown_line(results["environment"]) if "environment" in results else "Environment: not recorded.", ""]
    if results.get("rescored"):
        lines += [_rescored_line(results["rescored"]), ""]
    lines += settings_lines(results)
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    """The leaderboard as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    header, cells = _columns(results)
    table = Table(title=f"Leaderboard: {results['title']}")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for line in cells:
        table.add_row(*line)
    console = Console()
    if not console.is_terminal:
        # a log file has no width: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 200))
    console.print(table)
