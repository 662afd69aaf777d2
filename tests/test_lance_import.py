"""`import lancedb` without running the REST namespace client's __init__ (vidsearch/lance_import.py),
checked in a fresh interpreter: the store still works, and the client is there when asked for."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_store_works_without_the_rest_client_and_the_client_loads_when_used(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from vidsearch.store import Store
        import lancedb, numpy as np
        assert "lance_namespace_urllib3_client.api" not in sys.modules, "the REST client's __init__ ran at import"
        db = lancedb.connect({str(tmp_path / "db")!r})
        t = db.create_table("t", data=[{{"id": i, "vector": np.full(4, i, np.float32)}} for i in range(5)])
        assert t.search(np.ones(4, np.float32)).limit(2).to_arrow().num_rows == 2
        import lance_namespace_urllib3_client as client
        assert client.ApiClient is not None  # the deferred __init__ runs on first use
        assert "lance_namespace_urllib3_client.api" in sys.modules
        print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr
