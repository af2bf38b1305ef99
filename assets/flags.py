"""The feature flags as an observed source asset: lineage shows what rollback changes."""

import hashlib

import dagster as dg
import orjson

from assets.failures import surface_parity_errors
from assets.resources import ParityResource
from parity.io.control import ROLLOUT_STATE_FLAG
from parity.io.tables import AUDIT_TABLE

FEATURE_FLAGS = "feature_flags"


# multi_observable_source_asset builds an AssetsDefinition directly; the single-asset
# decorator goes through SourceAsset, whose conversion calls a property deprecated for 2.0.
@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            FEATURE_FLAGS,
            group_name="rollout",
            description=(
                "The migration's feature flags as they are in the Supabase feature_flags "
                "table. The rollback and canary jobs change them; every change is in "
                "feature_flag_audit (`parity flags history`)."
            ),
            kinds={"supabase", "postgres"},
        )
    ],
    name="observe_feature_flags",
)
@surface_parity_errors
def feature_flags(parity: ParityResource) -> dg.ObserveResult:
    plane = parity.open_control_plane()
    try:
        values = plane.read_flags(include_reserved=True)
        recent = plane.history()[-10:]
    finally:
        plane.close()
    version = hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    rollout = values.pop(ROLLOUT_STATE_FLAG, None)
    metadata: dict = {
        name: dg.MetadataValue.text(orjson.dumps(v).decode()) for name, v in values.items()
    }
    metadata["rollout_state"] = dg.MetadataValue.json(rollout or {})
    metadata["recent_changes"] = dg.MetadataValue.md(_history_markdown(recent))
    metadata["audit_history"] = dg.MetadataValue.text(
        f"table {parity.settings().events_table.schema}.{AUDIT_TABLE}; `parity flags history`"
    )
    return dg.ObserveResult(
        asset_key=FEATURE_FLAGS, data_version=dg.DataVersion(version), metadata=metadata
    )


def _history_markdown(rows) -> str:  # noqa: ANN001
    if not rows:
        return "_no flag changes audited yet: every flag has its default_"
    lines = [
        "| changed at (UTC) | flag | old | new | actor | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in reversed(rows):
        reason = str(r.reason).replace("|", "\\|")[:120]
        lines.append(
            f"| {r.changed_at:%Y-%m-%d %H:%M:%S} | {r.flag} | {orjson.dumps(r.old_value).decode()} "
            f"| {orjson.dumps(r.new_value).decode()} | {r.actor} | {reason} |"
        )
    return "\n".join(lines)
