"""The prepared data's ``manifest.json``: what a run read, kept, rejected and wrote, per scenario
and split, with its config and hash; its check on load and its console summary."""

from __future__ import annotations

from datetime import datetime, timezone

from interest_model import io
from interest_model.data import schema
from interest_model.data.prepared import TABLES


def build_manifest(cfg, engine, *, input_rows, valid_rows, deduped_rows, kept_rows, rejected_by_reason,
              iterations, items, counts, segments, user_flags, rules, input_files) -> dict:
    rejected_rows = sum(rejected_by_reason.values())
    scen = {}
    all_scheme = cfg.schemes()[0]
    for sc in cfg.scenarios:
        c = counts[(counts["scheme"] == all_scheme) & (counts["scenario"] == sc.name)]
        uf = user_flags[(user_flags["scheme"] == all_scheme) & (user_flags["scenario"] == sc.name)]
        scen[sc.name] = {
            "role": sc.role, "source": sc.source,
            "users": int(uf["users"].sum()),
            "items": int(c["item_id"].nunique()),
            "interactions": int(c["count"].sum()),
            "catalog_items": int(items.stats["catalog_items"].get(sc.name, 0)),
        }
    splits: dict = {}
    for scheme in cfg.schemes():
        splits[scheme] = {}
        for sc in cfg.scenarios:
            entry = {}
            uf = user_flags[(user_flags["scheme"] == scheme) & (user_flags["scenario"] == sc.name)]
            seg = segments[(segments["scheme"] == scheme) & (segments["scenario"] == sc.name)]
            for split in schema.SPLITS:
                c = counts[(counts["scheme"] == scheme) & (counts["scenario"] == sc.name) & (counts["split"] == split)]
                entry[split] = {"users": int(uf[split].sum()), "items": int((c["count"] > 0).sum()),
                                "interactions": int(c["count"].sum())}
            test_items = seg[seg["test_count"] > 0]
            entry["segments"] = {
                "cold_users": int(uf["cold_user"].sum()),
                "multi_scenario_users": int(uf["multi_scenario_user"].sum()),
                "cold_catalog_items": int(seg["cold_item"].sum()),
                "cold_test_items": int(test_items["cold_item"].sum()),
                "cold_test_interactions": int(test_items.loc[test_items["cold_item"], "test_count"].sum()),
            }
            splits[scheme][sc.name] = entry
    return {
        "format_version": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": engine.name,
        "config_hash": cfg.config_hash(),
        "config": cfg.to_public_dict(),
        "input_files": input_files,
        "input_rows": int(input_rows),
        "kept_rows": int(kept_rows),
        "duplicate_rows": int(valid_rows - deduped_rows),
        "rejected_rows": int(rejected_rows),
        "rejected_by_reason": dict(sorted(rejected_by_reason.items())),
        "kcore_removed_rows": int(deduped_rows - kept_rows),
        "kcore_iterations": int(iterations),
        "items": {k: v for k, v in items.stats.items()},
        "pseudonymization": {"algorithm": "HMAC-SHA256", "digest_chars": cfg.pseudonymize.digest_chars,
                             "key_env": cfg.pseudonymize.key_env},
        "time_split": None if rules.cutoffs is None else {
            name: {"valid_start": v, "test_start": t, "valid_start_utc": _utc(v), "test_start_utc": _utc(t)}
            for name, (v, t) in rules.cutoffs.items()},
        "scenarios": scen,
        "splits": splits,
        "outputs": {name: io.join(cfg.output_dir, name) for name in TABLES},
    }


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def check_manifest(m: dict) -> None:
    """The row accounting must close: nothing is lost without a count."""
    total = m["kept_rows"] + m["duplicate_rows"] + m["rejected_rows"] + m["kcore_removed_rows"]
    if m["input_rows"] != total:
        raise AssertionError(f"row accounting does not close: input {m['input_rows']} != kept + duplicates + "
                             f"rejected + k-core removed = {total}")
    if sum(m["rejected_by_reason"].values()) != m["rejected_rows"]:
        raise AssertionError("rejected_by_reason does not sum to rejected_rows")


def summary(m: dict) -> str:
    """Human-readable summary of a manifest."""
    by_source = ", ".join(f"{k} {v:,}" for k, v in m.get("input_rows_by_source", {}).items())
    lines = [
        f"input rows        {m['input_rows']:>12,}  ({by_source})",
        f"kept              {m['kept_rows']:>12,}",
        f"duplicates        {m['duplicate_rows']:>12,}",
        f"rejected          {m['rejected_rows']:>12,}  {m['rejected_by_reason'] or ''}",
        f"k-core removed    {m['kcore_removed_rows']:>12,}  ({m['kcore_iterations']} round{'s' * (m['kcore_iterations'] != 1)})",
        "",
        f"{'scenario':<20}{'role':<8}{'users':>12}{'items':>12}{'inter.':>14}{'catalog':>12}",
    ]
    for name, s in m["scenarios"].items():
        lines.append(f"{name:<20}{s['role']:<8}{s['users']:>12,}{s['items']:>12,}{s['interactions']:>14,}"
                     f"{s['catalog_items']:>12,}")
    for scheme, per in m["splits"].items():
        lines.append("")
        lines.append(f"split {scheme}: {'scenario':<16}{'train':>14}{'valid':>12}{'test':>12}"
                     f"{'cold users':>12}{'cold test items':>17}")
        for name, e in per.items():
            lines.append(f"{'':<7}{name:<16}{e['train']['interactions']:>14,}{e['valid']['interactions']:>12,}"
                         f"{e['test']['interactions']:>12,}{e['segments']['cold_users']:>12,}"
                         f"{e['segments']['cold_test_items']:>17,}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


