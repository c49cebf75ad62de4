"""Text reports: the summary table at the end of a build, and ``mepipe info``'s view of a store."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from mepipe.pipeline.params import PARAM_TYPES
from mepipe.pipeline.store import (
    datasets_in, done_flags, failures, group_variant, in_dataset, open_store, size_on_disk, stale_artifacts, store_path_of, variant_groups,
)

MAX_LISTED = 10


def build_table(summary) -> str:
    """The end-of-build summary: per artifact computed / reused / failed, wall time, store and size."""
    lines = [f"{summary.dataset}: {summary.samples} samples -> {summary.store} ({size_text(summary.size_bytes)})", ""]
    several = len(getattr(summary, "variants", [])) > 1
    for variant in (summary.variants if several else [None]):
        counts = summary.counts if variant is None else variant.counts
        if variant is not None:
            readers = f", for {', '.join(variant.readers)}" if variant.readers else ""
            lines.append(f"  variant {variant.variant.name} ({variant.variant.describe()}{readers}) in {variant.group}")
        lines.append(f"  {'artifact':<16}{'computed':>9}{'reused':>8}{'failed':>8}")
        for name, count in counts.items():
            lines.append(f"  {name:<16}{count.computed:>9}{count.reused:>8}{count.failed:>8}")
        lines.append("")
    if summary.results:
        kernels = sum(sum(v for k, v in r.seconds.items() if k not in ("decode", "write", "read")) for r in summary.results)
        decode = sum(r.seconds.get("decode", 0.0) for r in summary.results)
        peak = max(r.peak_rss_mb for r in summary.results)
        lines.append(
            f"  wall {summary.wall_s:.1f} s, {len(summary.results)} samples on {summary.workers} workers ({summary.scheduler}); "
            f"summed over samples: kernels {kernels:.1f} s, decoding {decode:.1f} s; peak memory per worker {peak:.0f} MB"
        )
    else:
        lines.append(f"  wall {summary.wall_s:.1f} s: everything was up to date, nothing computed")
    for note in summary.notes:
        lines.append(f"  note: {note}")
    if summary.failures:
        lines.append("")
        lines.append(f"  {len(summary.failures)} failed (sample, artifact: reason); they are in the store's qc/failures:")
        for sample_id, artifact, reason in _first_per_sample(summary.failures)[:MAX_LISTED]:
            lines.append(f"    {sample_id}  {artifact}: {reason}")
        hidden = len(_first_per_sample(summary.failures)) - MAX_LISTED
        if hidden > 0:
            lines.append(f"    ... and {hidden} more samples (`mepipe info` lists them)")
    return "\n".join(lines)


def store_report(path: str | Path) -> str:
    """``mepipe info``: datasets, sample counts, artifacts with parameters, QC failures, size on disk."""
    path = Path(path)
    root = open_store(path, "r")
    names = datasets_in(root)
    lines = [f"{path}: mepipe store (schema {root.attrs.get('mepipe_schema')}, written by mepipe {root.attrs.get('mepipe_version')}), "
             f"{size_text(size_on_disk(path))}, {len(names)} dataset{'s' if len(names) != 1 else ''}"]
    for name in names:
        group = root[name]
        current = in_dataset(group)
        n = int(current.sum())
        subjects = len(set(str(s) for s, keep in zip(group["subject"][:], current) if keep))
        gone = len(current) - n
        lines += ["", f"[{name}] {n} samples, {subjects} subjects; adapter {group.attrs.get('adapter')}, "
                      f"from {group.attrs.get('source_root')}; {size_text(size_on_disk(path / name))}"
                      + (" with its variants" if len(variant_groups(group)) > (1 if group_variant(group) else 0) else "")]
        if gone:
            lines.append(f"  {gone} earlier samples are no longer in the dataset (rows kept with in_dataset false, results removed)")
        emotions = Counter(str(e) for e, keep in zip(group["emotion"][:], current) if keep)
        lines.append("  emotions: " + ", ".join(f"{e} {c}" for e, c in emotions.most_common()))
        variants = variant_groups(group)
        if not group.attrs.get("artifacts"):
            lines.append("  nothing built in the dataset's own variant")
        elif group_variant(group) is not None:
            lines.append(f"  variant {group_variant(group).name} ({_variant_text(group)})")
            lines += _artifact_lines(group, current)
        for variant_name, child in variants.items():
            if child.path == group.path:
                continue
            lines += ["", f"  [{name} variant {variant_name}] ({_variant_text(child)}) in {child.path}; "
                          f"{size_text(size_on_disk(store_path_of(child)))}"]
            lines += ["  " + line for line in _artifact_lines(child, in_dataset(child))]
    return "\n".join(lines)


def _variant_text(group) -> str:
    variant = group_variant(group)
    readers = group.attrs.get("variant", {}).get("readers", [])
    return variant.describe() + (f"; read by {', '.join(readers)}" if readers else "")


def _artifact_lines(group, current) -> list[str]:
    """One group's artifacts (done, failed, key, parameters), its QC failures and its last build."""
    lines: list[str] = []
    records = group.attrs.get("artifacts", {})
    readers = group.attrs.get("variant", {}).get("readers", [])
    in_variants = "/" in group.path
    stale = stale_artifacts(group)
    recorded_failures = [f if keep else {} for f, keep in zip(failures(group), current)]
    lines.append(f"  {'artifact':<16}{'done':>6}{'failed':>8}  {'key':<18}parameters (differing from the defaults)")
    for artifact, record in records.items():
        done = int(done_flags(group, artifact).sum())
        failed = sum(1 for f in recorded_failures if f.get(artifact, {}).get("key") == record["key"])
        text = _params_text(artifact, record["params"], record.get("size"), records)
        lines.append(f"  {artifact:<16}{done:>6}{failed:>8}  {record['key']:<18}{text}")
        if artifact in stale:
            how = f"--for {','.join(readers)}" if in_variants and readers else f"--artifacts {artifact}"
            lines.append(f"  {'':<16}STALE: {stale[artifact]}; rebuild with {how}")
    failed_samples = [(str(group["sample_id"][i]), f) for i, f in enumerate(recorded_failures) if f]
    if failed_samples:
        lines.append(f"  QC: {len(failed_samples)} samples with failures")
        for sample_id, record in failed_samples[:MAX_LISTED]:
            artifact, first = next(iter(record.items()))
            more = f" (+{len(record) - 1} artifacts)" if len(record) > 1 else ""
            lines.append(f"    {sample_id}  {artifact}: {first['reason']}{more}")
        if len(failed_samples) > MAX_LISTED:
            lines.append(f"    ... and {len(failed_samples) - MAX_LISTED} more")
    else:
        lines.append("  QC: no failures")
    last = group.attrs.get("last_build")
    if last:
        lines.append(f"  last build: {last['wall_s']:.1f} s, scheduler {last['scheduler']}, computed " +
                     ", ".join(f"{a} {c}" for a, c in last["computed"].items()))
    return lines


def _params_text(artifact: str, params: dict, size, records: dict | None = None) -> str:
    text = _changed(artifact, params)
    if artifact == "magnified_flow":
        # it has no parameters of its own: it runs TV-L1 with flow's, which are what to show
        flow = (records or {}).get("flow", {}).get("params")
        return f"flow's: {_changed('flow', flow)}" if flow is not None else text
    return f"S={size}; {text}" if artifact == "face" else text


def _changed(artifact: str, params: dict) -> str:
    defaults = dataclasses.asdict(PARAM_TYPES[artifact]()) if artifact in PARAM_TYPES else {}
    changed = [f"{k}={v}" for k, v in params.items() if defaults.get(k) != v]
    return ", ".join(changed) if changed else "defaults"


def _first_per_sample(failed):
    seen, first = set(), []
    for sample_id, artifact, reason in failed:
        if sample_id not in seen:
            seen.add(sample_id)
            first.append((sample_id, artifact, reason))
    return first


def size_text(count: int) -> str:
    """A byte count as text: 512 B, 14.2 kB, 19.9 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
