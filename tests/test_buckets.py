"""The audience buckets against a real Milvus Lite server: scopes sharing a bucket stay apart, a bucket made by
another process is found, a half-made bucket is completed, and a 0.1 knowledge base migrates without loss."""

from __future__ import annotations

import itertools
from uuid import uuid4

import pytest

from agent.knowledge.filters import BUCKETS, bucket_of
from agent.knowledge.migrate import migrate
from agent.knowledge.store import KnowledgeStore, StoreError
from agent.types import Audience, Chunk

DIM = 4


def _store(services, collection: str, embedding: str = "test") -> KnowledgeStore:
    return KnowledgeStore(services.effective_milvus_uri, collection=collection, dim=DIM, embedding_name=embedding)


def _write(store: KnowledgeStore, audience: Audience, doc_id: str, *texts: str) -> None:
    chunks = [Chunk(n, doc_id.title(), "Section", text) for n, text in enumerate(texts)]
    vectors = [[1.0, float(n), 0.0, 0.5] for n in range(len(texts))]
    store.upsert_chunks(audience, doc_id=doc_id, source=doc_id, content_hash="h1", chunks=chunks, vectors=vectors)


def _ask(store: KnowledgeStore, audience: Audience, query: str, mode: str = "hybrid") -> set[str]:
    return {h.doc_id for h in store.search(audience, query, [1.0, 0.0, 0.0, 0.5], k=10, mode=mode)}  # type: ignore[arg-type]


@pytest.fixture()
def collection() -> str:
    return f"kb_{uuid4().hex[:10]}"


def _scopes_sharing_a_bucket(tenant: str) -> tuple[str, str]:
    seen: dict[int, str] = {}
    for n in itertools.count():
        scope = f"C{n}"
        bucket = bucket_of(tenant, scope)
        if bucket in seen:
            return seen[bucket], scope
        seen[bucket] = scope
    raise AssertionError  # pragma: no cover (64 buckets: a pair turns up within 65 scopes)


def test_scopes_that_share_a_bucket_never_see_each_other(services, collection):
    store = _store(services, collection)
    first, second = (Audience("acme", s) for s in _scopes_sharing_a_bucket("acme"))
    assert store.bucket(first.tenant, first.scope) == store.bucket(second.tenant, second.scope)
    _write(store, first, "alpha.md", "the quarterly gateway budget is 4200")
    _write(store, second, "beta.md", "the quarterly gateway budget is 9900")
    store.flush()
    for mode in ("hybrid", "dense", "bm25"):
        assert _ask(store, first, "quarterly gateway budget", mode) == {"alpha.md"}, mode
        assert _ask(store, second, "quarterly gateway budget", mode) == {"beta.md"}, mode
    assert (store.count(first), store.count(second), store.count()) == (1, 1, 2)
    assert len(store.buckets()) == 1


def test_passages_of_the_scope_and_the_tenant_wide_bucket_are_merged(services, collection):
    store = _store(services, collection)
    channel, everyone = Audience("acme", "C-ops"), Audience("acme", "*")
    _write(store, channel, "runbook.md", "restart the zorblax gateway with zorctl restart")
    _write(store, everyone, "policy.md", "the zorblax gateway policy allows restarts at night")
    store.flush()
    assert _ask(store, channel, "zorblax gateway restart") == {"runbook.md", "policy.md"}
    assert _ask(store, everyone, "zorblax gateway restart") == {"policy.md"}
    assert _ask(store, Audience("other", "C-ops"), "zorblax gateway restart") == set()
    # The two buckets' lists merge by relevance: BM25 scores are positive (Milvus Lite reports them negated).
    for mode in ("bm25", "hybrid"):
        hits = store.search(channel, "zorctl restart gateway", [0.0, 1.0, 0.0, 0.0], k=2, mode=mode)
        assert [h.doc_id for h in hits] == ["runbook.md", "policy.md"], mode
        assert hits[0].score > hits[1].score > 0, mode


def test_a_bucket_made_by_another_process_is_found_by_a_reader_that_looked_before(services, collection):
    reader, writer = _store(services, collection), _store(services, collection)
    audience = Audience("acme", "C-new")
    assert _ask(reader, audience, "gateway") == set()  # its bucket does not exist yet
    _write(writer, audience, "new.md", "the gateway listens on port 7341")
    writer.flush()
    assert _ask(reader, audience, "gateway") == {"new.md"}


def test_a_half_made_bucket_is_completed_by_the_next_writer(services, collection):
    """A worker killed between creating a bucket and asking for its indexes leaves a bucket without them."""
    store = _store(services, collection)
    audience = Audience("acme", "C-half")
    name = store.bucket(audience.tenant, audience.scope)
    schema, _ = store.bucket_schema()
    store.ensure_ready()
    store.client.create_collection(name, schema=schema)
    assert store.client.list_indexes(name) == []

    _write(_store(services, collection), audience, "doc.md", "the gateway listens on port 7341")
    assert sorted(store.client.list_indexes(name)) == ["dense", "doc_id", "scope", "sparse", "tenant"]
    store.flush()
    assert _ask(store, audience, "gateway port") == {"doc.md"}


def test_a_knowledge_base_of_another_embedding_model_is_refused(services, collection):
    _store(services, collection).ensure_ready()
    with pytest.raises(StoreError, match="EXPERTBOT_EMBEDDING_MODEL"):
        _store(services, collection, embedding="other").ensure_ready()


def _legacy_knowledge_base(
    store: KnowledgeStore, rows: list[dict[str, object]], tag: str = "test dim=4 partitions=64"
) -> None:
    """The single-collection layout of expertbot 0.1: passages in partitions a00..a63 of one collection."""
    schema, index = store.bucket_schema()
    client = store.client
    client.create_collection(store.collection, schema=schema, properties={"expertbot.embedding": tag})
    client.create_index(store.collection, index, sync=False)
    catalog, catalog_index = store.catalog_schema()
    client.create_collection(store.catalog, schema=catalog)  # 0.1 kept its model tag on the passages only
    client.create_index(store.catalog, catalog_index, sync=False)
    for row in rows:
        partition = f"a{bucket_of(str(row['tenant']), str(row['scope'])):02d}"
        if not client.has_partition(store.collection, partition):
            client.create_partition(store.collection, partition)
        client.insert(store.collection, [row], partition_name=partition)
    client.flush(store.collection)


def _legacy_rows(audiences: list[Audience], dim: int = DIM) -> list[dict[str, object]]:
    return [
        {
            "pk": f"{a.tenant}-{a.scope}-{n}",
            "tenant": a.tenant,
            "scope": a.scope,
            "doc_id": f"doc{n}.md",
            "source": f"doc{n}.md",
            "title": "Doc",
            "heading": "Part",
            "chunk": n,
            "text": f"zorblax passage {n} for {a.scope}",
            "search_text": f"zorblax passage {n} for {a.scope}",
            "content_hash": "h",
            "created_at": 1,
            "dense": [1.0, float(n), 0.0, 0.5] + [0.0] * (dim - 4),
        }
        for a in audiences
        for n in range(3)
    ]


AUDIENCES = [Audience("acme", "*"), Audience("acme", "C-eng"), Audience("globex", "D-1")]


def test_a_knowledge_base_of_expertbot_0_1_is_migrated_once_and_completely(services, collection):
    store = _store(services, collection)
    _legacy_knowledge_base(store, _legacy_rows(AUDIENCES))
    with pytest.raises(StoreError, match="docs migrate"):
        store.ensure_ready()

    progress: list[tuple[int, int]] = []
    assert migrate(store, lambda done, total: progress.append((done, total))) == 9
    assert progress[-1] == (9, 9)
    assert not store.client.has_collection(store.collection)

    fresh = _store(services, collection)
    assert fresh.count() == 9 and fresh.count(Audience("acme", "C-eng")) == 6  # its own 3 and the tenant's 3
    assert _ask(fresh, Audience("globex", "D-1"), "zorblax passage", "bm25") == {"doc0.md", "doc1.md", "doc2.md"}
    assert {h.text for h in fresh.search(Audience("acme", "*"), "zorblax", [1.0, 0.0, 0.0, 0.5], k=5)} <= {
        f"zorblax passage {n} for *" for n in range(3)
    }
    assert migrate(fresh) == 0  # nothing left to move
    assert len(fresh.buckets()) == len({bucket_of(a.tenant, a.scope) for a in AUDIENCES}) <= BUCKETS


def test_docs_migrate_command(services, collection, monkeypatch):
    """`expertbot docs migrate` against the configured knowledge base (here a fresh name), then once more."""
    from typer.testing import CliRunner

    from agent.knowledge.embeddings import get_embeddings
    from agent.settings import get_settings
    from bot.cli.app import app

    model = get_embeddings(services.embedding_model)
    store = KnowledgeStore(
        services.effective_milvus_uri, collection=collection, dim=model.dim, embedding_name=model.name
    )
    _legacy_knowledge_base(store, _legacy_rows(AUDIENCES, model.dim), f"{model.name} dim={model.dim} partitions=64")
    monkeypatch.setenv("EXPERTBOT_COLLECTION", collection)
    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(app, ["docs", "migrate"], catch_exceptions=False)
        again = CliRunner().invoke(app, ["docs", "migrate"], catch_exceptions=False)
        listed = CliRunner().invoke(app, ["docs", "list", "--json"], catch_exceptions=False)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    buckets = len({bucket_of(a.tenant, a.scope) for a in AUDIENCES})
    assert first.exit_code == 0 and f"moved 9 passages into {buckets} audience buckets" in first.stdout
    assert again.exit_code == 0 and "nothing to migrate" in again.stderr
    assert listed.exit_code == 0  # the knowledge base opens again


def test_after_a_milvus_lite_restart_a_new_process_reads_without_an_error(tmp_path, caplog):
    """Milvus Lite starts with every collection released; a reader loads its buckets before reading them."""
    from bot.localstack import free_port, start_milvus

    port, audience = free_port(), Audience("acme", "C-ops")
    server = start_milvus(tmp_path, port)
    try:
        writer = KnowledgeStore(f"http://127.0.0.1:{port}", collection="kb", dim=DIM, embedding_name="test")
        _write(writer, audience, "runbook.md", "restart the zorblax gateway with zorctl")
        writer.flush()
        writer.client.close()
    finally:
        server.stop()
    server = start_milvus(tmp_path, port)  # the same data, every collection released
    try:
        reader = KnowledgeStore(f"http://127.0.0.1:{port}", collection="kb", dim=DIM, embedding_name="test")
        with caplog.at_level("ERROR", logger="pymilvus"):
            assert _ask(reader, audience, "zorblax gateway") == {"runbook.md"}
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
        reader.client.close()
    finally:
        server.stop()


_CREATOR = """
import logging, sys, time
from agent.knowledge.store import KnowledgeStore
from agent.types import Audience

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")  # as a worker logs
uri, collection, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = KnowledgeStore(uri, collection=collection, dim=4, embedding_name="test")
time.sleep(max(0.0, start_at - time.time()))  # both processes begin together
store.ensure_ready()
for n in range(6):
    store.open_bucket(store.bucket("acme", f"C{n}"))
print("ok")
"""


@pytest.mark.slow
def test_two_processes_creating_the_same_buckets_log_no_error(services, collection):
    """Two workers taking their first jobs into the same new buckets: both succeed, neither logs an ERROR."""
    import subprocess
    import sys
    import time

    args = [sys.executable, "-c", _CREATOR, services.effective_milvus_uri, collection, str(time.time() + 8)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for (out, err), proc in zip(outputs, procs, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err
        assert "ERROR" not in err and "Traceback" not in err, err
    store = _store(services, collection)
    for n in range(6):
        indexes = store.client.list_indexes(store.bucket("acme", f"C{n}"))
        assert sorted(indexes) == ["dense", "doc_id", "scope", "sparse", "tenant"]
