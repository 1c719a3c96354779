"""The benchmark results as Markdown tables."""


def _num(value, digits=0):
    return "" if value is None else f"{value:,.{digits}f}"


def _ratio(value):
    return "" if value is None else f"{value:.2f}x"


def _get(mapping, *keys):
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _load(values):
    return " / ".join(f"{v:.2f}" for v in values)


def _bfloat16_peak(gflops):
    if gflops is None:
        return ("bfloat16 not measured: no native bfloat16 on this device, so the bfloat16 "
                "variants are not measured either (--bf16 computes in float32 here).")
    return f"{gflops:.0f} GFLOP/s bfloat16."


def header(results):
    m = results["machine"]
    lines = [f"Date {results['date']}; device {results['device']}"
             + (f" ({m['gpu']})" if m.get("gpu") else "")
             + f"; {m.get('cpu', m['cpu_model'])}, {m['cpu_count']} cores; torch {m['torch']}, "
             f"{m['torch_threads']} threads; measured matmul peak "
             f"{m['matmul_peak_gflops']['float32']:.0f} GFLOP/s float32, "
             + _bfloat16_peak(m['matmul_peak_gflops']['bfloat16']),
             f"Load average (1/5/15 min) {_load(results['load_average_start'])} at the start, "
             f"{_load(results['load_average_end'])} at the end; {results['wall_s']:.0f} s in all"
             + ("." if results["cases_done"] == results["cases_planned"] else
                f" (incomplete: {results['cases_done']} of {results['cases_planned']} "
                "measuring processes done)."),
             f"Command: `{results['command']}` at commit {results['source']}"
             + (" (quick: tiny sizes, numbers meaningless)" if results["quick"] else "")
             + (f"; ratios recomputed by `{results['rescored']['command']}` at commit "
                f"{results['rescored']['source']}" if "rescored" in results else "")
             + ". Engine / best eager ratios compare variants measured in the same process "
             "environment."]
    s = results["settings"]
    lines.append(f"Medians of {s['reps_batch1']} runs after {s['warmup']} warm-up run(s) at "
                 f"batch 1, of {s['reps_batched']} runs after {s['warmup_batched']} at larger "
                 f"batches; inference batches {', '.join(map(str, s['inference_batches']))} "
                 f"tried in turn while each raised images/s by more than "
                 f"{s['sweep_gain'] - 1:.0%}.")
    return "\n\n".join(lines)


def compute_table(results):
    rows = ["| net | variant | inference batch 1 (ms) | best inference (images/s @ batch) | "
            "train batch 1 (ms/iter) | train prototxt batch (ms/iter @ batch) | "
            "peak memory inference / train batch 1 (MiB) | engine / best eager: inference, "
            "train 1, train N | faster than Caffe: inference, train |",
            "|---|---|---|---|---|---|---|---|---|"]
    for net, entries in results["nets"].items():
        size = "x".join(map(str, results["settings"]["sizes"][net]))
        for variant, entry in entries.items():
            r = _get(results, "ratios", net, "engine", variant) or {}
            best = _get(entry, "inference", "best")
            train_n = _get(entry, "train", "prototxt_batch")
            memory = [_num(_get(entry, kind, "batch1", "peak_memory_mib"))
                      for kind in ("inference", "train")]
            rows.append(" | ".join([
                f"| {net} {size}", variant,
                _num(_get(entry, "inference", "batch1", "ms")),
                f"{best['images_per_s']:.2f} @ {best['batch']}" if best else "",
                _num(_get(entry, "train", "batch1", "ms")),
                f"{train_n['ms']:,.0f} @ {train_n['batch']}" if train_n else "",
                " / ".join(memory),
                ", ".join(_ratio(r.get(f"{k}_vs_best_eager")) for k in
                          ("inference_batch1", "train_batch1", "train_prototxt_batch"))
                if entry["family"] == "engine" else "",
                ", ".join(_ratio(r.get(k)) for k in
                          ("inference_speedup_vs_caffe", "train_speedup_vs_caffe"))
                if "inference_speedup_vs_caffe" in r or "train_speedup_vs_caffe" in r else "",
            ]) + " |")
    return "\n".join(rows)


def flops_table(results):
    """Achieved GFLOP/s (FLOPs per image x images/s) against the measured matmul peak."""
    peak = results["machine"]["matmul_peak_gflops"]
    rows = ["| net | GFLOP per image: forward / forward+backward | variant | inference GFLOP/s "
            "(best batch) | training GFLOP/s (best batch) | of float32 / bfloat16 matmul "
            "peak: inference, training |", "|---|---|---|---|---|---|"]
    for net, entries in results["nets"].items():
        flops = results["flops_per_image"][net]
        for variant, entry in entries.items():
            inference = _get(entry, "inference", "best", "images_per_s")
            train = _get(entry, "train", "best", "images_per_s")
            achieved = [None if v is None else v * flops[k] / 1e9
                        for v, k in ((inference, "forward"), (train, "train"))]
            fractions = [f"{a / peak['float32']:.0%} / " + (f"{a / peak['bfloat16']:.0%}" if
                                                          peak["bfloat16"] else "-")
                         if a is not None else "" for a in achieved]
            batches = [_get(entry, kind, "best", "batch") for kind in ("inference", "train")]
            cells = [f"{a:,.0f} @ {b}" if a is not None else "" for a, b in zip(achieved, batches)]
            rows.append(f"| {net} | {flops['forward'] / 1e9:.0f} / {flops['train'] / 1e9:.0f} | "
                        f"{variant} | {cells[0]} | {cells[1]} | {', '.join(fractions)} |")
    return "\n".join(rows)


def data_table(results):
    if not results["data"]:
        return ""
    rows = ["| variant | data set | image size | batch | DenseImageData images/s | "
            f"a training step on the {results['device']} consumes (images/s): plain engine at the "
            "prototxt batch; fastest engine variant at its best batch |",
            "|---|---|---|---|---|---|"]
    consumer = {"squares": "segnet_squares", "camvid": "segnet_basic"}
    for variant, data in results["data"].items():
        for name, figure in data["decode"].items():
            consumed = _get(results, "nets", consumer[name], "engine", "train", "prototxt_batch",
                            "images_per_s")
            trained = [(entry["train"]["best"], other) for other, entry in
                       results["nets"].get(consumer[name], {}).items()
                       if entry["family"] == "engine" and "train" in entry]
            best, fastest = max(trained, key=lambda t: t[0]["images_per_s"], default=(None, ""))
            rows.append(f"| {variant} | {name} | {'x'.join(map(str, figure['size']))} | "
                        f"{figure['batch']} | {figure['images_per_s']:.1f} | "
                        f"{_num(consumed, 2) or 'not measured'}; " + (
                            f"{best['images_per_s']:.2f} @ {best['batch']} ({fastest})" if best
                            else "not measured") + " |")
    rows += ["", "| variant | squares training step with its DenseImageData, batch 1 (ms) | "
             "of which waiting in the data layer (ms) |", "|---|---|---|"]
    for variant, data in results["data"].items():
        figure = data["train_with_data"]
        rows.append(f"| {variant} | {figure['ms']:,.0f} | {figure['data_wait_ms']:.1f} |")
    return "\n".join(rows)


def errors_list(results):
    if not results["errors"]:
        return ""
    return "Failed cases:\n\n" + "\n".join(
        f"- {e['family']} {e['variant']} {', '.join(e['kinds'])} {' '.join(e['nets'])}: "
        f"{e['error']}" for e in results["errors"])


def markdown(results):
    parts = [header(results), compute_table(results), flops_table(results), data_table(results),
             errors_list(results)]
    return "\n\n".join(part for part in parts if part) + "\n"
