"""Release names and contents: what starts a rollout, and what is refused with a reason."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from rollout.model import ReleaseKind
from rollout.releases import (
    MAX_MANIFEST_BYTES,
    MAX_SCRIPT_BYTES,
    ExtensionDefaults,
    ReleaseError,
    ReleaseName,
    build_release,
    desired_model,
    max_release_bytes,
    parse_release_name,
    rollout_id_for,
    size_problem,
    unread_release,
    unread_rollout_id,
)

URL = "https://acct.blob.core.windows.net/init"


@pytest.mark.parametrize(
    ("name", "kind", "app", "version"),
    [
        ("install_nginx.v7.sh", ReleaseKind.SCRIPT, "install_nginx", 7),
        ("install_nginx.v10.sh", ReleaseKind.SCRIPT, "install_nginx", 10),
        ("install_nginx.v007.sh", ReleaseKind.SCRIPT, "install_nginx", 7),
        ("web-app.v1.sh", ReleaseKind.SCRIPT, "web-app", 1),
        ("install_nginx.v0.sh", ReleaseKind.SCRIPT, "install_nginx", 0),
        ("install_nginx.v8.image.json", ReleaseKind.IMAGE, "install_nginx", 8),
    ],
)
def test_release_names_parse(name: str, kind: ReleaseKind, app: str, version: int) -> None:
    assert parse_release_name(name) == ReleaseName(kind, app, version, name)


def test_versions_compare_numerically_not_as_text() -> None:
    v9, v10 = parse_release_name("a.v9.sh"), parse_release_name("a.v10.sh")
    assert isinstance(v9, ReleaseName) and isinstance(v10, ReleaseName)
    assert v10.version > v9.version


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("install_nginx.sh", "does not match"),
        ("install_nginx.v1.sh.exe", "does not match"),
        ("install_nginx.vX.sh", "does not match"),
        ("install_nginx.v-1.sh", "does not match"),
        ("install_nginx.v1.5.sh", "does not match"),
        ("install_nginx.V1.sh", "does not match"),
        ("install nginx.v1.sh", "does not match"),
        ("install_nginx;rm -rf /.v1.sh", "virtual folder"),
        ("$(reboot).v1.sh", "does not match"),
        ("`id`.v1.sh", "does not match"),
        ("../install_nginx.v1.sh", "virtual folder"),
        ("a/b/install_nginx.v1.sh", "virtual folder"),
        ("web/", "does not match"),
        ("/install_nginx.v1.sh", "virtual folder"),
        ("we b/install_nginx.v1.sh", "virtual folder"),
        ("web\\x/install_nginx.v1.sh", "virtual folder"),
        ("web/../install_nginx.v1.sh", "virtual folder"),
        ("..\\install_nginx.v1.sh", "virtual folder"),
        ("install_nginx.v1.sh\n", "control characters"),
        ("install\x00nginx.v1.sh", "control characters"),
        ("ínstall_nginx.v1.sh", "does not match"),
        (".v1.sh", "does not match"),
        ("-rf.v1.sh", "does not match"),
        ("install_nginx.v99999999999.sh", "out of range"),
        ("install_nginx.v1234567890123.sh", "does not match"),
        ("a" * 300 + ".v1.sh", "characters long"),
        ("install_nginx.v1.json", "does not match"),
    ],
)
def test_hostile_or_foreign_names_are_not_releases(name: str, why: str) -> None:
    result = parse_release_name(name)
    assert isinstance(result, str) and why in result


def _name(blob: str) -> ReleaseName:
    parsed = parse_release_name(blob)
    assert isinstance(parsed, ReleaseName)
    return parsed


def test_a_script_release_records_url_and_sha256() -> None:
    release = build_release(_name("install_nginx.v1.sh"), f"{URL}/install_nginx.v1.sh", b"#!/bin/bash\necho hi\n")
    assert release.sha256 == hashlib.sha256(b"#!/bin/bash\necho hi\n").hexdigest()
    assert release.blob_url == f"{URL}/install_nginx.v1.sh"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"#!/bin/bash\n\x00\x01", "NUL"),
        (b"\xff\xfe\xfa", "not UTF-8"),
        (b"#" * (256 * 1024 + 1), "at most"),
    ],
)
def test_unusable_scripts_are_refused_with_a_reason(content: bytes, why: str) -> None:
    with pytest.raises(ReleaseError, match=why):
        build_release(_name("install_nginx.v1.sh"), f"{URL}/install_nginx.v1.sh", content)


IMAGE = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/images/nginx-updated-image"


def test_an_image_manifest_gives_the_image_id() -> None:
    release = build_release(
        _name("web.v3.image.json"), f"{URL}/web.v3.image.json", json.dumps({"imageId": IMAGE}).encode()
    )
    assert release.kind is ReleaseKind.IMAGE and release.image_id == IMAGE
    assert desired_model(release, ExtensionDefaults()).image_id == IMAGE


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"image": "x"}', "JSON object"),
        (b'{"imageId": "ubuntu"}', "not a managed image"),
        (b'{"imageId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/x/y"}', "not a managed image"),
    ],
)
def test_bad_image_manifests_are_refused(content: bytes, why: str) -> None:
    with pytest.raises(ReleaseError, match=why):
        build_release(_name("web.v3.image.json"), f"{URL}/web.v3.image.json", content)


def test_the_desired_extension_fetches_with_the_managed_identity_and_no_sas() -> None:
    release = build_release(_name("install_nginx.v7.sh"), f"{URL}/install_nginx.v7.sh", b"echo 7\n")
    ext = desired_model(release, ExtensionDefaults()).extension
    assert ext is not None
    assert (ext.publisher, ext.type, ext.type_handler_version) == ("Microsoft.Azure.Extensions", "CustomScript", "2.1")
    assert ext.settings == {"fileUris": [f"{URL}/install_nginx.v7.sh"], "commandToExecute": "bash install_nginx.v7.sh"}
    assert ext.protected_settings == {"managedIdentity": {}}
    assert "?" not in ext.settings["fileUris"][0]
    user_assigned = desired_model(release, ExtensionDefaults(identity_client_id="cid")).extension
    assert user_assigned is not None and user_assigned.protected_settings == {"managedIdentity": {"clientId": "cid"}}
    public = desired_model(release, ExtensionDefaults(file_auth="none")).extension
    assert public is not None and public.protected_settings == {}


def test_rollout_ids_are_deterministic_per_content() -> None:
    a = build_release(_name("install_nginx.v7.sh"), f"{URL}/install_nginx.v7.sh", b"echo 7\n")
    b = build_release(_name("install_nginx.v7.sh"), f"{URL}/install_nginx.v7.sh", b"echo 7\n")
    c = build_release(_name("install_nginx.v7.sh"), f"{URL}/install_nginx.v7.sh", b"echo seven\n")
    assert rollout_id_for(a) == rollout_id_for(b) != rollout_id_for(c)
    assert rollout_id_for(a).startswith("install_nginx-v7-")


# --- size: decided from the blob's properties, before anything is downloaded ----------------------


@pytest.mark.parametrize(
    ("name", "size", "problem"),
    [
        ("a.v1.sh", 0, None),  # empty is judged on the content (the script is empty), not here
        ("a.v1.sh", MAX_SCRIPT_BYTES, None),
        ("a.v1.sh", MAX_SCRIPT_BYTES + 1, f"release is {MAX_SCRIPT_BYTES + 1} bytes; at most {MAX_SCRIPT_BYTES}"),
        ("a.v1.sh", 2**30, f"release is 1073741824 bytes; at most {MAX_SCRIPT_BYTES} are accepted for a script"),
        ("a.v1.image.json", MAX_MANIFEST_BYTES, None),
        (
            "a.v1.image.json",
            MAX_MANIFEST_BYTES + 1,
            f"release is {MAX_MANIFEST_BYTES + 1} bytes; at most {MAX_MANIFEST_BYTES} are accepted for an image",
        ),
        ("a.v1.image.json", MAX_SCRIPT_BYTES, f"release is {MAX_SCRIPT_BYTES} bytes"),  # the manifest limit is lower
    ],
)
def test_the_size_limit_depends_on_the_kind_and_says_so(name: str, size: int, problem: str | None) -> None:
    parsed = _name(name)
    found = size_problem(parsed, size)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem) and found.endswith("(it was not downloaded)")
    assert max_release_bytes(parsed.kind) == (MAX_SCRIPT_BYTES if name.endswith(".sh") else MAX_MANIFEST_BYTES)


def test_an_unread_release_has_no_content_hash_and_an_id_from_name_and_etag() -> None:
    name = _name("install_nginx.v9.sh")
    release = unread_release(name, f"{URL}/install_nginx.v9.sh")
    assert release.sha256 == "" and release.blob_url == f"{URL}/install_nginx.v9.sh" and release.version == 9
    first = unread_rollout_id(name, '"0x8DC1"')
    digest = hashlib.sha256(b'unread\ninstall_nginx.v9.sh\n"0x8DC1"').hexdigest()[:10]
    assert first == f"install_nginx-v9-{digest}"
    assert unread_rollout_id(name, '"0x8DC1"') == first  # a second event for the same upload: same row
    assert unread_rollout_id(name, '"0x8DC2"') != first  # a new upload under the same name: a new row
    assert unread_rollout_id(_name("install_nginx.v10.sh"), '"0x8DC1"') != first
    # The same shape as a content-hash id, so everything that handles rollout ids handles it.
    assert re.fullmatch(r"install_nginx-v9-[0-9a-f]{10}", first)


def test_an_image_release_without_an_image_asks_for_no_change() -> None:
    # A rejected manifest is recorded with its desired model: it must not crash on the missing image id.
    release = unread_release(_name("a.v2.image.json"), f"{URL}/a.v2.image.json")
    assert desired_model(release, ExtensionDefaults()).image_id is None


@pytest.mark.parametrize(
    ("name", "group", "file"),
    [
        ("web/install_nginx.v7.sh", "web", "install_nginx.v7.sh"),
        ("eu-west-2/web.v3.sh", "eu-west-2", "web.v3.sh"),
        # Not a group name (upper case, '_'): still a release by name; routing refuses it and records why.
        ("Payments/install_nginx.v7.sh", "Payments", "install_nginx.v7.sh"),
        ("pay_ments/install_nginx.v7.sh", "pay_ments", "install_nginx.v7.sh"),
    ],
)
def test_a_release_in_a_folder_names_its_group(name: str, group: str, file: str) -> None:
    parsed = _name(name)
    assert parsed.group == group and parsed.blob_name == file and parsed.path == name
    # The VMs run the file by its own name (CustomScript downloads fileUris by their last segment).
    release = build_release(parsed, f"{URL}/{name}", b"#!/bin/bash\necho hi\n")
    assert release.group == group and release.blob_name == file and release.blob_url == f"{URL}/{name}"


def test_a_release_at_the_top_level_has_no_group() -> None:
    parsed = _name("install_nginx.v7.sh")
    assert parsed.group is None and parsed.path == "install_nginx.v7.sh"
    assert build_release(parsed, f"{URL}/install_nginx.v7.sh", b"echo\n").group is None


def test_unread_rollout_ids_differ_per_folder() -> None:
    from rollout.releases import unread_rollout_id

    top, web = _name("a.v1.sh"), _name("web/a.v1.sh")
    assert unread_rollout_id(top, '"e"') != unread_rollout_id(web, '"e"')
    # Unchanged for releases at the top level (rows recorded before groups keep their ids).
    digest = hashlib.sha256(b'unread\na.v1.sh\n"e"').hexdigest()
    assert unread_rollout_id(top, '"e"') == f"a-v1-{digest[:10]}"
