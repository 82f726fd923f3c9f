"""The measured figures: eval, bench and quickstart JSON files the commands wrote, found
beside the run and the model (or given), and the views the card takes of them:
evaluations, live conditions and latency series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionedge.card.reading import model_report_path, read_json


def source_kind(obj: Any) -> str | None:
    """What a JSON file is: "eval", "bench", "quickstart", or None."""
    if not isinstance(obj, dict):
        return None
    if "eval" in obj and "latency_ms" in obj:
        return "quickstart"
    if "metrics" in obj and "split" in obj and "n" in obj:
        return "eval"
    if "batches" in obj and "runtime" in obj:
        return "bench"
    return None


def _resolve(name: str, base: Path) -> set[Path]:
    path = Path(name)
    found = {path.resolve()} if path.is_absolute() else {(base / path).resolve(), path.resolve()}
    # A checkpoint names its run folder.
    return found | {p.parent for p in found if p.suffix == ".safetensors"}


def candidate_files(folders: list[Path]) -> list[Path]:
    patterns = ("*.eval*.json", "eval*.json", "*.bench*.json", "bench*.json", "report.json")
    seen: list[Path] = []
    for folder in folders:
        for pattern in patterns:
            for p in sorted(folder.glob(pattern)):
                if p.resolve() not in {s.resolve() for s in seen}:
                    seen.append(p)
    return seen


def collect_sources(
    identity: set[Path], folders: list[Path], given: tuple[Path, ...]
) -> list[dict[str, Any]]:
    """The measured-figure files: {"path", "kind", "model", "data"}. Found files count only
    when the model they name is in identity (the run folder, its checkpoint, its exports)."""
    out: list[dict[str, Any]] = []
    for path, explicit in [(p, True) for p in given] + [
        (p, False) for p in candidate_files(folders)
    ]:
        if any(s["path"].resolve() == path.resolve() for s in out):
            continue
        obj = read_json(path)
        kind = source_kind(obj)
        if kind is None:
            if explicit:
                raise ValueError(f"{path}: not an eval, bench or quickstart JSON report")
            continue
        named = obj["eval"].get("model") if kind == "quickstart" else obj.get("model")
        if not explicit and (not named or not (_resolve(named, path.parent) & identity)):
            continue
        out.append({"path": path, "kind": kind, "model": named, "data": obj})
    return out


def evaluations(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured evaluation: {"source", "backend", "result"} (a quickstart report
    holds two: ONNX Runtime and PyTorch on the same samples)."""
    out = []
    for s in facts["sources"]:
        if s["kind"] == "eval":
            backend = "ONNX Runtime" if "providers" in s["data"] else "PyTorch"
            out.append({"source": s["path"], "backend": backend, "result": s["data"]})
        elif s["kind"] == "quickstart":
            ev = s["data"]["eval"]
            out.append({"source": s["path"], "backend": "ONNX Runtime", "result": ev})
            torch_eval = s["data"].get("torch_eval")
            if torch_eval:
                # The quickstart's PyTorch evaluation ran the run's checkpoint on the
                # same samples; its file names no model.
                merged = {**ev, **torch_eval, "model": "the run's best.safetensors (PyTorch)"}
                merged.pop("providers", None)
                out.append({"source": s["path"], "backend": "PyTorch", "result": merged})
    return out


def live_figures(facts: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for s in facts["sources"]:
        if s["kind"] in ("eval", "quickstart") and "live" in s["data"]:
            out.append((s["path"], s["data"]["live"]))
    return out


def latency_series(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Stored latency figures: {"name", "source", "stats" {pNN_ms...}}. Only percentiles
    and means are stored anywhere (no per-call times)."""
    out = []
    for s in facts["sources"]:
        if s["kind"] == "bench":
            out += bench_series(s["path"], s["data"])
        elif s["kind"] == "quickstart":
            out += quickstart_series(s["path"], s["data"]["latency_ms"])
    for rep in facts["exports"]:
        out += precision_series(rep)
    return out


def bench_series(path: Path, d: dict[str, Any]) -> list[dict[str, Any]]:
    """A bench report's series: per batch size the whole pipeline and the inference alone,
    then PyTorch eager when it was measured too."""
    out = []
    for b, v in d["batches"].items():
        st = v["stages"]["total"]
        out.append({"name": f"runtime, batch {b}, whole pipeline", "source": path, "stats": st})
        inf = v["stages"]["inference"]
        out.append({"name": f"runtime, batch {b}, inference", "source": path, "stats": inf})
    for name in ("torch",):
        if name in d:
            out.append(
                {"name": f"PyTorch eager, batch {d['batch']}", "source": path, "stats": d[name]}
            )
    return out


def quickstart_series(path: Path, lat: dict[str, Any]) -> list[dict[str, Any]]:
    """The quickstart's latency_ms holds flat keys (runtime_p50, torch_p90, ...)."""
    out = []
    for who, label in (("runtime", "ONNX Runtime"), ("torch", "PyTorch eager")):
        st = {k.split("_")[1] + "_ms": v for k, v in lat.items() if k.startswith(who + "_p")}
        if st:
            out.append(
                {
                    "name": f"{label}, batch {lat.get('batch')}, model compute",
                    "source": path,
                    "stats": st,
                }
            )
    return out


def precision_series(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """The latencies export's int8/fp16 check measured (batch 1), from its report."""
    out = []
    for precision in ("int8", "fp16"):
        entry = rep.get(precision) or {}
        for which, st in (entry.get("latency") or {}).items():
            if isinstance(st, dict) and "p50_ms" in st:
                src = rep.get("_path") or model_report_path(Path(rep["model"]))
                out.append(
                    {
                        "name": f"{which} ({precision} check), batch 1",
                        "source": Path(src),
                        "stats": st,
                    }
                )
    return out


def pct_order(key: str) -> float:
    """Sort key of a stats name: mean first, then p50, p90, ... by number."""
    body = key.removesuffix("_ms")
    return -1.0 if body == "mean" else float(body[1:]) if body[1:].isdigit() else 1e9
