"""Issue 23 item 3: a link to a task's scratch copy becomes the store's URL, never
``file://s3://...`` (the approval request linked that for a run on object storage)."""

from __future__ import annotations

from pathlib import Path

from opencity.runstore import Scratch, _map


def test_file_links_to_the_scratch_copy_name_the_store():
    local = "/tmp/opencity-task-abc/run"
    sc = Scratch(settings=None, mapping=[("s3://opencity-runs/city", local)])
    html = Path(local, "reports", "_review", "r.html").as_uri()
    body = f"* release report: [r.html]({html}) (`{local}/reports/_review/r.html`)"
    assert sc.to_uris(body) == (
        "* release report: [r.html](s3://opencity-runs/city/reports/_review/r.html) "
        "(`s3://opencity-runs/city/reports/_review/r.html`)")
    assert "file://s3:" not in sc.to_uris({"body": body})["body"]
    # back to the scratch copy: plain paths (a file:// link of a URL is never written)
    assert sc.to_local("s3://opencity-runs/city/outputs/x") == f"{local}/outputs/x"
    # a local-to-local mapping keeps file:// links as they are
    assert _map(f"file://{local}/a", [(local, "/srv/run")]) == "file:///srv/run/a"
