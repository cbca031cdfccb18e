"""The local Storage API (/storage/v1) driven by the real supabase-py (storage3) client.

Every test talks HTTP to the session stack; assertions check what the client returns, the raw
wire shape where clients depend on it, and the database/disk state behind it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from storage3.exceptions import StorageApiError
from supabase import Client, ClientOptions, create_client

from devstack.stack import Stack, StackState

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
BUCKET = "generated-images"


def _client(state: StackState, key: str) -> Client:
    options = ClientOptions(auto_refresh_token=False, persist_session=False)
    return create_client(state.url, key, options)


def _signed_up(state: StackState) -> tuple[Client, str, str]:
    """A client signed in as a fresh user: (client, user id, access token)."""
    client = _client(state, state.keys.anon_key)
    res = client.auth.sign_up(
        {"email": f"st-{uuid.uuid4().hex[:10]}@example.test", "password": "correct-horse-1"}
    )
    assert res.user is not None and res.session is not None
    return client, res.user.id, res.session.access_token


@pytest.fixture(scope="module")
def service(stack_state: StackState) -> Client:
    return _client(stack_state, stack_state.keys.service_role_key)


@pytest.fixture
def bucket(service: Client) -> Iterator[str]:
    """A fresh public bucket, emptied and deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    service.storage.create_bucket(name, options={"public": True})
    yield name
    service.storage.empty_bucket(name)
    service.storage.delete_bucket(name)


def _storage_file(stack: Stack, bucket: str, name: str) -> Path:
    return stack.storage_dir / bucket / name


def _raw(
    state: StackState,
    method: str,
    path: str,
    key: str,
    *,
    content: bytes = b"",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A request below /storage/v1 with the raw path as given (no client-side encoding)."""
    all_headers = {"apikey": key, "Authorization": f"Bearer {key}", **(headers or {})}
    url = f"{state.url}/storage/v1{path}"
    return httpx.request(method, url, headers=all_headers, content=content)


# -- buckets ---------------------------------------------------------------------------------
def test_bucket_lifecycle_validates_in_storage3(service: Client) -> None:
    name = f"life-{uuid.uuid4().hex[:10]}"
    created = service.storage.create_bucket(
        name,
        options={"public": False, "file_size_limit": 1024, "allowed_mime_types": ["image/png"]},
    )
    assert created == {"name": name}
    got = service.storage.get_bucket(name)  # pydantic BaseBucket validation
    assert (got.id, got.name, got.public) == (name, name, False)
    assert got.file_size_limit == 1024
    assert got.allowed_mime_types == ["image/png"]
    assert got.owner == ""
    assert got.created_at.tzinfo is not None
    assert name in {b.id for b in service.storage.list_buckets()}

    service.storage.update_bucket(name, {"public": True, "file_size_limit": 2048})
    updated = service.storage.get_bucket(name)
    assert (updated.public, updated.file_size_limit) == (True, 2048)

    with pytest.raises(StorageApiError) as dup:
        service.storage.create_bucket(name)
    assert (dup.value.status, dup.value.code) == ("409", "Duplicate")

    service.storage.from_(name).upload("keep.png", PNG, {"content-type": "image/png"})
    with pytest.raises(StorageApiError) as busy:
        service.storage.delete_bucket(name)
    assert busy.value.status == "409"

    service.storage.empty_bucket(name)
    assert service.storage.delete_bucket(name) == {"message": "Successfully deleted"}
    with pytest.raises(StorageApiError) as gone:
        service.storage.get_bucket(name)
    assert gone.value.status == "404"


def test_bucket_name_and_size_format_are_validated(service: Client) -> None:
    with pytest.raises(StorageApiError) as bad_name:
        service.storage.create_bucket("no/slashes")
    assert bad_name.value.status == "400"
    name = f"units-{uuid.uuid4().hex[:8]}"
    size: Any = "2KB"  # supabase-js documents string sizes; storage3 passes them through
    service.storage.create_bucket(name, options={"file_size_limit": size})
    try:
        assert service.storage.get_bucket(name).file_size_limit == 2000
    finally:
        service.storage.delete_bucket(name)


def test_users_see_no_buckets_without_a_bucket_policy(stack_state: StackState) -> None:
    user, _uid, _token = _signed_up(stack_state)
    assert user.storage.list_buckets() == []
    with pytest.raises(StorageApiError) as denied:
        user.storage.create_bucket(f"mine-{uuid.uuid4().hex[:8]}")
    assert (denied.value.status, denied.value.code) == ("403", "Unauthorized")


# -- upload / download -------------------------------------------------------------------------
def test_upload_download_and_public_url(
    service: Client, bucket: str, stack: Stack, stack_state: StackState
) -> None:
    files = service.storage.from_(bucket)
    res = files.upload("dir/pic one.png", PNG, {"content-type": "image/png"})
    assert res.full_path == f"{bucket}/dir/pic one.png"
    assert res.path == "dir/pic one.png"
    assert files.download("dir/pic one.png") == PNG
    assert _storage_file(stack, bucket, "dir/pic one.png").read_bytes() == PNG

    url = files.get_public_url("dir/pic one.png")
    assert url == f"{stack_state.url}/storage/v1/object/public/{bucket}/dir/pic%20one.png"
    public = httpx.get(url)
    assert public.status_code == 200
    assert public.content == PNG
    assert public.headers["content-type"] == "image/png"
    assert public.headers["cache-control"] == "max-age=3600"
    assert public.headers["etag"] == f'"{hashlib.md5(PNG).hexdigest()}"'
    assert int(public.headers["content-length"]) == len(PNG)
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(PNG))
    cached = httpx.get(url, headers={"if-none-match": public.headers["etag"]})
    assert cached.status_code == 304


def test_object_metadata_row(service: Client, bucket: str, admin_conn: psycopg.Connection) -> None:
    res = service.storage.from_(bucket).upload(
        "meta.png", PNG, {"content-type": "image/png", "metadata": {"gen": "42"}}
    )
    assert res.full_path == f"{bucket}/meta.png"
    row = admin_conn.execute(
        "select metadata, user_metadata, owner_id from storage.objects"
        " where bucket_id = %s and name = 'meta.png'",
        (bucket,),
    ).fetchone()
    assert row is not None
    metadata, user_metadata, owner_id = row
    assert metadata["size"] == metadata["contentLength"] == len(PNG)
    assert metadata["mimetype"] == "image/png"
    assert metadata["cacheControl"] == "max-age=3600"
    assert metadata["eTag"] == f'"{hashlib.md5(PNG).hexdigest()}"'
    assert metadata["httpStatusCode"] == 200 and metadata["lastModified"].endswith("Z")
    assert user_metadata == {"gen": "42"}
    assert owner_id is None  # service_role has no sub


def test_duplicate_upload_is_a_409_in_a_400(
    service: Client, bucket: str, stack_state: StackState
) -> None:
    files = service.storage.from_(bucket)
    files.upload("dup.png", PNG, {"content-type": "image/png"})
    with pytest.raises(StorageApiError) as exc:
        files.upload("dup.png", b"other", {"content-type": "image/png"})
    assert exc.value.status == "409"
    assert exc.value.code == "Duplicate"
    assert exc.value.message == "The resource already exists"
    raw = _raw(
        stack_state,
        "POST",
        f"/object/{bucket}/dup.png",
        stack_state.keys.service_role_key,
        content=b"x",
        headers={"content-type": "image/png"},
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "statusCode": "409",
        "code": "KeyAlreadyExists",
        "error": "Duplicate",
        "message": "The resource already exists",
    }
    assert files.download("dup.png") == PNG


def test_upsert_and_update_replace_bytes(service: Client, bucket: str) -> None:
    files = service.storage.from_(bucket)
    first = files.upload("up.png", PNG, {"content-type": "image/png"})
    files.upload("up.png", b"second", {"content-type": "image/png", "upsert": "true"})
    assert files.download("up.png") == b"second"
    again = files.update("up.png", b"third", {"content-type": "image/webp"})
    assert again.full_path == first.full_path
    assert files.download("up.png") == b"third"
    info = files.info("up.png")
    assert info["content_type"] == "image/webp" and info["size"] == 5


def test_list_folders_and_files(service: Client, bucket: str) -> None:
    files = service.storage.from_(bucket)
    for name in ("a/b/deep.png", "a/c.png", "a/d.png", "top.png"):
        files.upload(name, PNG, {"content-type": "image/png"})
    root = files.list()
    assert [e["name"] for e in root] == ["a", "top.png"]
    folder = root[0]
    assert folder["id"] is None and folder["metadata"] is None
    listed = files.list("a")
    assert [e["name"] for e in listed] == ["b", "c.png", "d.png"]
    file_entry = listed[1]
    assert uuid.UUID(file_entry["id"])
    assert file_entry["metadata"]["size"] == len(PNG)
    assert file_entry["metadata"]["mimetype"] == "image/png"
    desc = files.list("a", {"sortBy": {"column": "name", "order": "desc"}})
    assert [e["name"] for e in desc] == ["b", "d.png", "c.png"]  # folders first
    assert [e["name"] for e in files.list("a/", {"search": "d"})] == ["d.png"]
    assert [e["name"] for e in files.list("a", {"limit": 1, "offset": 1})] == ["c.png"]


def test_remove_returns_rows_and_deletes_bytes(service: Client, bucket: str, stack: Stack) -> None:
    files = service.storage.from_(bucket)
    files.upload("gone/x.png", PNG, {"content-type": "image/png"})
    files.upload("gone/y.png", PNG, {"content-type": "image/png"})
    assert files.exists("gone/x.png") is True
    removed = files.remove(["gone/x.png", "gone/y.png", "gone/never.png"])
    assert sorted(r["name"] for r in removed) == ["gone/x.png", "gone/y.png"]
    assert all(r["bucket_id"] == bucket for r in removed)
    assert files.exists("gone/x.png") is False
    assert not _storage_file(stack, bucket, "gone").exists()  # emptied folders are pruned
    with pytest.raises(StorageApiError) as missing:
        files.download("gone/x.png")
    assert (missing.value.status, missing.value.code) == ("404", "not_found")


def test_size_limit_and_mime_types(service: Client) -> None:
    name = f"strict-{uuid.uuid4().hex[:8]}"
    service.storage.create_bucket(
        name, options={"file_size_limit": 1000, "allowed_mime_types": ["image/png", "image/*"]}
    )
    files = service.storage.from_(name)
    try:
        with pytest.raises(StorageApiError) as big:
            files.upload("big.png", b"x" * 1001, {"content-type": "image/png"})
        assert (big.value.status, big.value.code) == ("413", "Payload too large")
        files.upload("fits.png", b"x" * 1000, {"content-type": "image/png"})
        files.upload("wild.gif", b"GIF89a", {"content-type": "image/gif"})
        with pytest.raises(StorageApiError) as mime:
            files.upload("doc.txt", b"hello", {"content-type": "text/plain"})
        assert (mime.value.status, mime.value.code) == ("415", "invalid_mime_type")
        assert "text/plain" in mime.value.message
        assert [e["name"] for e in files.list()] == ["fits.png", "wild.gif"]
    finally:
        service.storage.empty_bucket(name)
        service.storage.delete_bucket(name)


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_size_limit_without_content_length(
    service: Client, stack_state: StackState, stack: Stack
) -> None:
    """Chunked bodies (no Content-Length), raw and multipart, are cut off at the limit."""
    name = f"chunked-{uuid.uuid4().hex[:8]}"
    service.storage.create_bucket(name, options={"file_size_limit": 1000})
    key = stack_state.keys.service_role_key
    boundary = "devstackboundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="cacheControl"\r\n\r\n3600\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name=""; filename="blob"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"x" * (3 << 20)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    try:
        for body, ctype in (
            (b"y" * 5000, "image/png"),
            (multipart, f"multipart/form-data; boundary={boundary}"),
        ):
            res = httpx.post(
                f"{stack_state.url}/storage/v1/object/{name}/big.png",
                headers={"Authorization": f"Bearer {key}", "content-type": ctype},
                content=_chunks(body),
            )
            assert res.status_code == 400, res.text
            assert res.json()["statusCode"] == "413"
        assert service.storage.from_(name).list() == []
        assert not [p for p in (stack.storage_dir / "#tmp").iterdir() if p.is_file()]
    finally:
        service.storage.empty_bucket(name)
        service.storage.delete_bucket(name)


def test_generated_images_bucket_limits(service: Client) -> None:
    files = service.storage.from_(BUCKET)
    with pytest.raises(StorageApiError) as mime:
        files.upload(f"{uuid.uuid4()}/x.txt", b"text", {"content-type": "text/plain"})
    assert mime.value.status == "415"


# -- permissions ---------------------------------------------------------------------------------
def test_user_cannot_upload_to_generated_images(stack_state: StackState) -> None:
    user, uid, _token = _signed_up(stack_state)
    with pytest.raises(StorageApiError) as exc:
        user.storage.from_(BUCKET).upload(f"{uid}/own.png", PNG, {"content-type": "image/png"})
    assert exc.value.status == "403"
    assert exc.value.code == "Unauthorized"
    assert exc.value.message == "new row violates row-level security policy"


def test_user_reads_only_own_folder(
    service: Client, stack_state: StackState, admin_conn: psycopg.Connection
) -> None:
    user, uid, token = _signed_up(stack_state)
    _other, other_uid, _ = _signed_up(stack_state)
    own, theirs = f"{uid}/{uuid.uuid4()}.png", f"{other_uid}/{uuid.uuid4()}.png"
    images = service.storage.from_(BUCKET)
    images.upload(own, PNG, {"content-type": "image/png"})
    images.upload(theirs, b"secret", {"content-type": "image/png"})
    try:
        assert user.storage.from_(BUCKET).download(own) == PNG
        auth = httpx.get(
            f"{stack_state.url}/storage/v1/object/authenticated/{BUCKET}/{own}",
            headers={"Authorization": f"Bearer {token}", "apikey": stack_state.keys.anon_key},
        )
        assert auth.status_code == 200 and auth.content == PNG
        with pytest.raises(StorageApiError) as hidden:
            user.storage.from_(BUCKET).download(theirs)
        assert hidden.value.status == "404"
        assert user.storage.from_(BUCKET).exists(theirs) is False
        assert [e["name"] for e in user.storage.from_(BUCKET).list()] == [uid]
    finally:
        images.remove([own, theirs])
    left = admin_conn.execute(
        "select count(*) from storage.objects where name = any(%s)", ([own, theirs],)
    ).fetchone()
    assert left == (0,)


def test_user_delete_is_a_no_op_without_a_delete_policy(
    service: Client, stack_state: StackState
) -> None:
    user, uid, _ = _signed_up(stack_state)
    own = f"{uid}/{uuid.uuid4()}.png"
    service.storage.from_(BUCKET).upload(own, PNG, {"content-type": "image/png"})
    try:
        assert user.storage.from_(BUCKET).remove([own]) == []
        assert service.storage.from_(BUCKET).exists(own) is True
    finally:
        service.storage.from_(BUCKET).remove([own])


@pytest.fixture
def user_folder_bucket(service: Client, admin_conn: psycopg.Connection) -> Iterator[str]:
    """A private bucket whose insert policy lets a user write only into their own folder."""
    name = f"own-{uuid.uuid4().hex[:8]}"
    service.storage.create_bucket(name)
    policy = f"test insert own folder {name}"
    for action, clause in (("insert", "with check"), ("select", "using")):
        admin_conn.execute(
            psycopg.sql.SQL(
                "create policy {} on storage.objects for {} to authenticated {} ("
                "bucket_id = {} and (storage.foldername(name))[1] = (select auth.uid())::text)"
            ).format(
                psycopg.sql.Identifier(f"{policy} {action}"),
                psycopg.sql.SQL(action),
                psycopg.sql.SQL(clause),
                psycopg.sql.Literal(name),
            )
        )
    yield name
    for action in ("insert", "select"):
        admin_conn.execute(
            psycopg.sql.SQL("drop policy {} on storage.objects").format(
                psycopg.sql.Identifier(f"{policy} {action}")
            )
        )
    service.storage.empty_bucket(name)
    service.storage.delete_bucket(name)


def test_user_uploads_into_own_folder_with_owner(
    stack_state: StackState, user_folder_bucket: str, admin_conn: psycopg.Connection
) -> None:
    user, uid, _ = _signed_up(stack_state)
    files = user.storage.from_(user_folder_bucket)
    files.upload(f"{uid}/a.png", PNG, {"content-type": "image/png"})
    owner = admin_conn.execute(
        "select owner, owner_id from storage.objects where bucket_id = %s",
        (user_folder_bucket,),
    ).fetchone()
    assert owner == (uuid.UUID(uid), uid)
    assert files.download(f"{uid}/a.png") == PNG
    with pytest.raises(StorageApiError) as denied:
        files.upload(f"{uuid.uuid4()}/b.png", PNG, {"content-type": "image/png"})
    assert denied.value.status == "403"
    with pytest.raises(StorageApiError) as no_upsert:  # upsert also needs an UPDATE policy
        files.upload(f"{uid}/a.png", PNG, {"content-type": "image/png", "upsert": "true"})
    assert no_upsert.value.status == "403"
    public = httpx.get(files.get_public_url(f"{uid}/a.png"))
    assert public.status_code == 400 and public.json()["statusCode"] == "404"


def test_private_download_needs_a_valid_jwt(service: Client, stack_state: StackState) -> None:
    path = f"{uuid.uuid4()}/x.png"
    service.storage.from_(BUCKET).upload(path, PNG, {"content-type": "image/png"})
    try:
        bad = httpx.get(
            f"{stack_state.url}/storage/v1/object/authenticated/{BUCKET}/{path}",
            headers={"Authorization": "Bearer not.a.jwt"},
        )
        assert bad.status_code == 400
        assert bad.json()["statusCode"] == "400" and bad.json()["error"] == "InvalidJWT"
        forged = create_client(
            stack_state.url,
            stack_state.keys.service_role_key[:-4] + "AAAA",
            ClientOptions(auto_refresh_token=False, persist_session=False),
        )
        with pytest.raises(StorageApiError) as exc:
            forged.storage.from_(BUCKET).download(path)
        assert exc.value.code == "InvalidJWT"
        assert (
            httpx.get(f"{stack_state.url}/storage/v1/object/{BUCKET}/{path}").json()["statusCode"]
            == "403"
        )
    finally:
        service.storage.from_(BUCKET).remove([path])


@pytest.mark.parametrize(
    "raw_path",
    [
        "a/%2E%2E/%2E%2E/escape.png",
        "%2E%2E/escape.png",
        "a//b.png",
        "%2Fabs.png",
        "a/%2E/b.png",
        "a%5C..%5Cescape.png",
        "ctl%00.png",
        "x" * 300 + ".png",
    ],
)
def test_path_traversal_is_refused(
    stack_state: StackState, stack: Stack, bucket: str, raw_path: str
) -> None:
    res = _raw(
        stack_state,
        "POST",
        f"/object/{bucket}/{raw_path}",
        stack_state.keys.service_role_key,
        content=PNG,
        headers={"content-type": "image/png"},
    )
    assert res.status_code == 400, res.text
    assert res.json()["statusCode"] == "400" and res.json()["code"] == "InvalidKey"
    assert not (stack.storage_dir / "escape.png").exists()
    assert not (stack.storage_dir.parent / "escape.png").exists()


# -- signed URLs, move, copy ---------------------------------------------------------------
def test_signed_url_round_trip(service: Client, bucket: str) -> None:
    files = service.storage.from_(bucket)
    files.upload("s/signed file.png", PNG, {"content-type": "image/png"})
    signed = files.create_signed_url("s/signed file.png", 60)["signedURL"]
    assert signed and "token=" in signed
    res = httpx.get(signed)
    assert res.status_code == 200 and res.content == PNG
    tampered = signed.replace("signed%20file.png", "other.png")
    assert httpx.get(tampered).json()["code"] == "InvalidSignature"
    many = files.create_signed_urls(["s/signed file.png", "s/missing.png"], 60)
    assert many[0]["signedURL"] and many[1]["signedURL"] is None and many[1]["error"]


def test_move_and_copy(service: Client, bucket: str, stack: Stack) -> None:
    files = service.storage.from_(bucket)
    files.upload("m/src.png", PNG, {"content-type": "image/png"})
    assert files.copy("m/src.png", "m/copy.png")["Key"] == f"{bucket}/m/copy.png"
    files.move("m/src.png", "n/moved.png")
    assert files.download("n/moved.png") == PNG
    assert files.download("m/copy.png") == PNG
    assert files.exists("m/src.png") is False
    assert not _storage_file(stack, bucket, "m/src.png").exists()
    with pytest.raises(StorageApiError) as exists:
        files.move("m/copy.png", "n/moved.png")
    assert exists.value.status == "409"


def test_concurrent_readers_never_see_partial_files(service: Client, bucket: str) -> None:
    big_a, big_b = b"A" * (3 << 20), b"B" * (3 << 20)
    files = service.storage.from_(bucket)
    files.upload("race.bin", big_a, {"content-type": "application/octet-stream"})
    url = files.get_public_url("race.bin")
    stop = threading.Event()

    def writer() -> int:
        n = 0
        while not stop.is_set() and n < 12:
            files.update("race.bin", big_b if n % 2 == 0 else big_a)
            n += 1
        return n

    with httpx.Client() as http, concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(writer)
        seen = set()
        for _ in range(12):
            body = http.get(url).content
            assert body in (big_a, big_b), f"partial read of {len(body)} bytes"
            seen.add(body[:1])
        stop.set()
        assert future.result() > 0
    assert seen <= {b"A", b"B"}
