"""Release limits at their exact edges, and the exact reasons a release is refused with.

A refused release is recorded as ``Rejected`` with its reason (README "What it does"), so the
reason's words are behaviour. The limits: names of at most 200 characters, versions up to
999,999,999, scripts up to 256 KiB, manifests up to 16 KiB (docs/design.md "Releases").
"""

from __future__ import annotations

import json

import pytest

from rollout.model import ExtensionSpec, ReleaseKind
from rollout.releases import (
    MAX_MANIFEST_BYTES,
    MAX_SCRIPT_BYTES,
    MAX_VERSION,
    ExtensionDefaults,
    ReleaseError,
    ReleaseName,
    build_release,
    desired_model,
    parse_release_name,
    rollout_id_for,
    unread_release,
)

URL = "https://acct.blob.core.windows.net/init"
IMAGE = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/images/nginx-updated-image"


def parsed(blob: str) -> ReleaseName:
    name = parse_release_name(blob)
    assert isinstance(name, ReleaseName), name
    return name


def refusal(blob: str, content: bytes, url: str | None = None) -> str:
    with pytest.raises(ReleaseError) as caught:
        build_release(parsed(blob), url or f"{URL}/{blob}", content)
    return str(caught.value)


# --- names -------------------------------------------------------------------------------------------


def test_the_reasons_a_name_is_not_a_release() -> None:
    assert parse_release_name("") == "empty blob name"
    assert parse_release_name("install_nginx.v1\x7f.sh") == "blob name contains control characters"
    assert parse_release_name("install_nginx.v1.sh\t") == "blob name contains control characters"


def test_a_name_of_200_characters_is_judged_by_its_shape_and_201_by_its_length() -> None:
    at_limit = "a" * 194 + ".v1.sh"
    assert len(at_limit) == 200
    assert "does not match <app>.v<N>.sh" in str(parse_release_name(at_limit))
    over = "a" * 195 + ".v1.sh"
    assert parse_release_name(over) == "blob name is 201 characters long; release names are short"


def test_the_highest_version_is_accepted_and_one_more_is_not() -> None:
    assert parsed(f"a.v{MAX_VERSION}.sh").version == 999_999_999
    assert parse_release_name(f"a.v{MAX_VERSION + 1}.sh") == "version 1000000000 is out of range (at most 999999999)"


# --- script content ----------------------------------------------------------------------------------


def test_a_script_of_exactly_256_kib_is_accepted() -> None:
    content = b"#" * MAX_SCRIPT_BYTES
    assert build_release(parsed("a.v1.sh"), f"{URL}/a.v1.sh", content).kind is ReleaseKind.SCRIPT


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b" \n\t", "the script is empty"),
        (b"#" * (MAX_SCRIPT_BYTES + 1), f"the script is {MAX_SCRIPT_BYTES + 1} bytes; at most 262144 are accepted"),
        (b"echo hi\x00", "the script contains NUL bytes: it is not a text script"),
        (b"echo \xff", "the script is not UTF-8 text (invalid start byte at byte 5)"),
    ],
)
def test_the_reasons_a_script_is_refused(content: bytes, reason: str) -> None:
    assert refusal("a.v1.sh", content) == reason


def test_an_http_blob_url_is_accepted_and_anything_else_refused() -> None:
    # Azurite (the local twin) serves blobs over http; Azure over https.
    release = build_release(parsed("a.v1.sh"), "HTTP://127.0.0.1:10000/devstoreaccount1/init/a.v1.sh", b"echo\n")
    assert release.blob_url == "HTTP://127.0.0.1:10000/devstoreaccount1/init/a.v1.sh"
    assert refusal("a.v1.sh", b"echo\n", url="ftp://x/a.v1.sh") == "blob URL 'ftp://x/a.v1.sh' is not an http(s) URL"


# --- image manifests ---------------------------------------------------------------------------------


def test_a_manifest_of_exactly_16_kib_is_accepted() -> None:
    body = json.dumps({"imageId": IMAGE}).encode()
    content = body + b" " * (MAX_MANIFEST_BYTES - len(body))
    assert len(content) == MAX_MANIFEST_BYTES
    assert build_release(parsed("a.v1.image.json"), f"{URL}/a.v1.image.json", content).image_id == IMAGE


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b" " * (MAX_MANIFEST_BYTES + 1), f"the image manifest is {MAX_MANIFEST_BYTES + 1} bytes; at most 16384"),
        (b'{"imageId": 7}', 'the image manifest must be a JSON object with a string "imageId"'),
        (
            b'{"imageId": "nope"}',
            "imageId 'nope' is not a managed image or gallery image resource id "
            "(/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/images/<name>)",
        ),
    ],
)
def test_the_reasons_a_manifest_is_refused(content: bytes, reason: str) -> None:
    assert refusal("a.v1.image.json", content) == reason


# --- what a release asks for -------------------------------------------------------------------------


def test_an_unread_release_keeps_the_name_it_was_refused_under() -> None:
    release = unread_release(parsed("web-app.v12.image.json"), f"{URL}/web-app.v12.image.json")
    assert (release.kind, release.app, release.version) == (ReleaseKind.IMAGE, "web-app", 12)
    assert release.blob_name == "web-app.v12.image.json"
    assert release.label == "web-app v12"


def test_the_rollout_id_is_the_app_the_version_and_ten_hex_digits_of_the_content_hash() -> None:
    release = build_release(parsed("Install_Nginx.v7.sh"), f"{URL}/Install_Nginx.v7.sh", b"echo 7\n")
    assert rollout_id_for(release) == f"install_nginx-v7-{release.sha256[:10]}"


def test_the_preview_extension_has_the_configured_name() -> None:
    release = build_release(parsed("a.v1.sh"), f"{URL}/a.v1.sh", b"echo\n")
    ext = desired_model(release, ExtensionDefaults(extension_name="Deploy")).extension
    assert ext is not None and ext.name == "Deploy"


def observed(version: str) -> ExtensionSpec:
    return ExtensionSpec(
        name="CustomScript",
        publisher="Microsoft.Azure.Extensions",
        type="CustomScript",
        type_handler_version=version,
        settings={"commandToExecute": "bash old.sh"},
        protected_settings=None,
    )


@pytest.mark.parametrize(("version", "written"), [("1.9-preview", "2.1"), ("2.x", "2.1"), ("2.10", "2.10")])
def test_a_handler_version_is_compared_by_its_leading_numbers(version: str, written: str) -> None:
    # managedIdentity needs CustomScript 2.1 or later: "1.9-preview" reads as 1 (then a non-number),
    # "2.x" as 2, both older; "2.10" is minor 10, newer than 2.1 (numbers, not text).
    release = build_release(parsed("a.v1.sh"), f"{URL}/a.v1.sh", b"echo\n")
    ext = desired_model(release, ExtensionDefaults(), observed(version)).extension
    assert ext is not None and ext.type_handler_version == written
