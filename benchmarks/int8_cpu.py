"""Is int8 faster than fp32 on this CPU, and if not, where does the time go?

    .venv/bin/python benchmarks/int8_cpu.py MODEL.onnx --data DATA [--threads 1]
        [--repeats 300] [--out /tmp/int8_cpu] [--json]

MODEL.onnx is an fp32 file from `fusionedge export`; DATA its data set (train split for
calibration, val split, or test when val is empty, for accuracy and timing). Latency is
timed batch-1 through fusionedge.timing: after a warm-up, the sessions take turns in
blocks of 25 calls on the same samples, so a shared machine's load falls on all of them
alike while each runs back to back as in an application. Four tables:
1. int8 variants next to fp32: accuracy, p50/p95, speed-up. The product's default is
   the first; the others change one choice each (per-tensor weights, signed activations,
   8-bit weights without reduce_range, which op types are quantised);
2. the log-mel front end quantised too: NOT something `fusionedge export` does (it costs
   accuracy), only a measure of how much of the possible gain sits in the front end;
3. each branch's share of fp32 latency, from sub-models cut out of the file;
4. ONNX Runtime's profile (the sessions taking turns sample by sample), fp32 against the
   default int8, grouped into the front end, Quantize/DequantizeLinear, Conv/Gemm/MatMul
   (what int8 can speed up) and the rest (the profiler adds a few microseconds per node:
   compare, do not add up to latency).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import onnx
import onnx.utils

from fusionedge.export import quantize
from fusionedge.export.precision import (
    interleaved_latency,
    metric_points,
    open_session,
    run_scores,
    split_arrays,
)
from fusionedge.export.quantize import Int8Options, frontend_nodes, nodes_under, quantize_int8
from fusionedge.runtime.model_file import spec_from_metadata

CPU = ["CPUExecutionProvider"]
VARIANTS = {
    "int8 default": Int8Options(),
    "per-tensor weights": Int8Options(per_channel=False),
    "int8 activations": Int8Options(activation_type="int8"),
    "no reduce_range": Int8Options(reduce_range=False),
    "Gemm too": Int8Options(op_types=("Conv", "MatMul", "Gemm")),
    "every op type ORT can quantise": Int8Options(op_types=()),
}


def cpu_flags() -> dict[str, bool]:
    """The instruction sets that decide int8 speed on x86 (VNNI: one-instruction u8 x s8)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = set(next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split())
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}


def timed(
    paths: dict[str, Path], samples, spec, threads: int, repeats: int
) -> dict[str, dict[str, Any]]:
    sessions = {name: open_session(p, CPU, threads) for name, p in paths.items()}
    latency = interleaved_latency(sessions, samples, repeats)
    base = latency[next(iter(paths))]["p50_ms"]
    return {
        name: {
            "accuracy": round(metric_points(spec, samples, run_scores(s, samples))[1], 2),
            **latency[name],
            "speedup_p50": round(base / latency[name]["p50_ms"], 3),
        }
        for name, s in sessions.items()
    }


def branch_shares(fp32: Path, out: Path, samples, threads: int, repeats: int) -> dict[str, Any]:
    """p50 of sub-models cut out of the fp32 graph, each as a share of the whole."""
    model = onnx.load(str(fp32))
    inputs = [i.name for i in model.graph.input]
    parts = {
        "log-mel front end (stays fp32)": frontend_nodes(model),
        "text branch (GRU: no int8)": nodes_under(model, "encoders.text"),
        "image branch": nodes_under(model, "encoders.image"),
        "audio branch (front end included)": nodes_under(model, "encoders.audio"),
    }
    paths = {"whole model": fp32}
    for i, (name, nodes) in enumerate(parts.items()):
        if nodes:
            paths[name] = out / f"part{i}.onnx"
            onnx.utils.extract_model(str(fp32), str(paths[name]), inputs, _outputs(model, nodes))

    class Part:  # the sub-models take only some inputs and give other outputs
        def __init__(self, session) -> None:
            self.session, self.names = session, {i.name for i in session.get_inputs()}

        def run(self, _, feed):
            return self.session.run(None, {k: v for k, v in feed.items() if k in self.names})

    sessions = {name: Part(open_session(p, CPU, threads)) for name, p in paths.items()}
    latency = interleaved_latency(sessions, samples, repeats)
    whole = latency["whole model"]["p50_ms"]
    return {
        name: {"p50_ms": t["p50_ms"], "share": round(t["p50_ms"] / whole, 3)}
        for name, t in latency.items()
    }


def _outputs(model: onnx.ModelProto, names: list[str]) -> list[str]:
    """Values made inside the node set and read outside it (or graph outputs)."""
    inside = set(names)
    made = {o for n in model.graph.node if n.name in inside for o in n.output}
    read = {i for n in model.graph.node if n.name not in inside for i in n.input}
    return sorted(made & (read | {o.name for o in model.graph.output}))


ARITHMETIC = {"Conv", "QLinearConv", "Gemm", "QGemm", "MatMul", "FusedMatMul", "MatMulInteger"}


def group_of(event: dict[str, Any], frontend: set[str]) -> str:
    """Where a profiled kernel belongs: the front end (kept fp32), Q/DQ, the arithmetic
    int8 can speed up, or the rest. ONNX Runtime names a fused node after the first
    node it replaced, followed by "/"."""
    op = event["args"]["op_name"]
    if event["name"].removesuffix("_kernel_time").split("/")[0] in frontend:
        return "front end (fp32 in both)"
    if op in ("QuantizeLinear", "DequantizeLinear"):
        return "QuantizeLinear/DequantizeLinear"
    return "Conv/Gemm/MatMul" if op in ARITHMETIC else "other ops (GRU, glue)"


def op_profile(
    paths: dict[str, Path], samples, threads: int, runs: int = 300
) -> dict[str, dict[str, dict[str, float]]]:
    """Microseconds per run by group and by op type, the sessions taking turns."""
    import onnxruntime as ort

    frontend = set(frontend_nodes(onnx.load(str(next(iter(paths.values()))))))
    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
        options.log_severity_level = 3
        sessions[name] = ort.InferenceSession(str(path), options, providers=CPU)
    inputs = samples.inputs()
    for i in range(runs):
        one = {k: v[i % len(samples) : i % len(samples) + 1] for k, v in inputs.items()}
        for session in sessions.values():
            session.run(None, one)
    result = {}
    for name, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        kernels = [
            e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        ]
        groups: Counter[str] = Counter()
        ops: Counter[str] = Counter()
        for e in kernels:
            groups[group_of(e, frontend)] += e["dur"]
            ops[e["args"]["op_name"]] += e["dur"]
        result[name] = {
            "groups": {g: round(us / runs, 1) for g, us in groups.most_common()},
            "ops": {op: round(us / runs, 1) for op, us in ops.most_common()},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", help="folder for the variants (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    fp32 = Path(args.model)
    model = onnx.load(str(fp32))
    spec = spec_from_metadata({p.key: p.value for p in model.metadata_props}, fp32)
    _, train = split_arrays(Path(args.data), spec, ["train"], 256)
    split, samples = split_arrays(Path(args.data), spec, ["val", "test"])
    out = Path(args.out or tempfile.mkdtemp(prefix="int8_cpu-"))
    out.mkdir(parents=True, exist_ok=True)

    paths = {"fp32": fp32}
    for i, (name, options) in enumerate(VARIANTS.items()):
        paths[name] = out / f"variant{i}.onnx"
        quantize_int8(fp32, paths[name], train, options)
    # The front end quantised as well: export never does this (see quantize.py); it only
    # measures how much of the possible gain lies in the part that must stay fp32.
    paths["front end too (never exported)"] = out / "frontend_too.onnx"
    with mock.patch.object(quantize, "frontend_nodes", lambda m: []):
        quantize_int8(fp32, paths["front end too (never exported)"], train)
    result = {
        "cpu": cpu_flags(),
        "threads": args.threads,
        "split": split,
        "n": len(samples),
        "variants": timed(paths, samples, spec, args.threads, args.repeats),
        "shares": branch_shares(fp32, out, samples, args.threads, args.repeats),
        "profile_us_per_run": op_profile(
            {"fp32": fp32, "int8 default": paths["int8 default"]}, samples, args.threads
        ),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"CPU {result['cpu']}, {args.threads} thread(s), {len(samples)} {split} samples")
    print(f"\n{'':38}{'accuracy':>9}{'p50 ms':>9}{'p95 ms':>9}{'speed-up':>10}")
    for name, r in result["variants"].items():
        print(
            f"{name:38}{r['accuracy']:9.2f}{r['p50_ms']:9.3f}{r['p95_ms']:9.3f}"
            f"{r['speedup_p50']:9.2f}x"
        )
    print(f"\n{'share of fp32 latency':38}{'p50 ms':>9}{'share':>9}")
    for name, r in result["shares"].items():
        print(f"{name:38}{r['p50_ms']:9.3f}{r['share']:9.0%}")
    print("\nprofile, us per run (profiler overhead included; compare the columns):")
    profile = result["profile_us_per_run"]
    groups = sorted({g for p in profile.values() for g in p["groups"]})
    print(f"{'':38}" + "".join(f"{name:>14}" for name in profile))
    for g in groups:
        print(f"{g:38}" + "".join(f"{p['groups'].get(g, 0):14.1f}" for p in profile.values()))
    print(f"{'total':38}" + "".join(f"{sum(p['groups'].values()):14.1f}" for p in profile.values()))


if __name__ == "__main__":
    main()
