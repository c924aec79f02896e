"""The data dir archive and its restore, on real files in a temp dir (no Docker)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from specivod.adapters.backup import datadir
from specivod.adapters.backup.leftovers import drop_missing_sql, relations_in
from specivod.domain.errors import BackupError
from tests.support.trees import tree


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "attachments").mkdir(parents=True)
    (root / "attachments" / "a.txt").write_text("a\n" * 1000)
    (root / "attachments" / "b.bin").write_bytes(os.urandom(70_000))
    os.link(root / "attachments" / "a.txt", root / "attachments" / "a-again.txt")
    (root / "empty").mkdir(mode=0o705)
    (root / "empty").chmod(0o705)
    (root / "latest").symlink_to("attachments/a.txt")
    (root / "absolute").symlink_to("/nonexistent/elsewhere")
    secret = root / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(secret, 1234, 4321)
        os.chown(root / "empty", 999, 999)
    root.chmod(0o750)
    return root


def test_archive_then_extract_keeps_everything(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "data.tar"
    written: list[int] = []

    summary = datadir.archive(data_dir, archive, written.append)
    datadir.extract(archive, tmp_path / "restored")

    assert tree(tmp_path / "restored") == tree(data_dir)
    assert summary.file_count == 4
    assert summary.size == archive.stat().st_size == sum(written)
    assert summary.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600


def test_archive_of_a_missing_data_dir_fails(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="does not exist"):
        datadir.archive(tmp_path / "nowhere", tmp_path / "data.tar")


def _archive_with(
    data_dir: Path, tmp_path: Path, act: dict[str, Callable[[], object]]
) -> tuple[datadir.ArchiveSummary, Path]:
    """Archive ``data_dir``, running ``act[name]`` right after the entry ``name`` is stat'ed."""
    seen: list[str] = []

    def stated(path: Path) -> None:
        name = str(path.relative_to(data_dir))
        seen.append(name)
        if name in act:
            act[name]()

    summary = datadir.archive(data_dir, tmp_path / "data.tar", stat_seen=stated)
    datadir.extract(tmp_path / "data.tar", tmp_path / "restored")
    assert set(act) <= set(seen)
    return summary, tmp_path / "restored"


def test_files_and_directories_that_vanish_while_archived_are_skipped(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Vanished before their turn (b.bin, empty) or between stat and read (secret, the
    directory gone before it was listed): skipped and counted, the rest archived whole."""
    (data_dir / "gone").mkdir()
    (data_dir / "gone" / "inner.txt").write_text("inner\n")
    expected = tree(data_dir)
    summary, restored = _archive_with(
        data_dir,
        tmp_path,
        {
            "attachments/a.txt": (data_dir / "attachments" / "b.bin").unlink,
            "absolute": (data_dir / "empty").rmdir,
            "gone": lambda: shutil.rmtree(data_dir / "gone"),
            "secret": (data_dir / "secret").unlink,
        },
    )

    for name in ("attachments/b.bin", "empty", "gone", "gone/inner.txt", "secret"):
        del expected[name]
    assert tree(restored) == expected
    assert (summary.vanished, summary.changed, summary.file_count) == (4, 0, 2)
    assert "4 files or directories vanished" in caplog.text


def test_a_hard_link_to_a_file_that_vanished_carries_the_content(
    data_dir: Path, tmp_path: Path
) -> None:
    """``a-again.txt`` is archived first; it vanishes between stat and read, so ``a.txt``,
    which tar would have linked to it, is written as a file of its own."""
    summary, restored = _archive_with(
        data_dir,
        tmp_path,
        {"attachments/a-again.txt": (data_dir / "attachments" / "a-again.txt").unlink},
    )

    assert not (restored / "attachments" / "a-again.txt").exists()
    assert (restored / "attachments" / "a.txt").read_text() == "a\n" * 1000
    assert (summary.vanished, summary.changed, summary.file_count) == (1, 0, 3)


def test_a_file_that_shrinks_while_archived_is_padded_and_the_archive_stays_valid(
    data_dir: Path, tmp_path: Path
) -> None:
    b_bin = data_dir / "attachments" / "b.bin"
    size = b_bin.stat().st_size
    summary, restored = _archive_with(
        data_dir, tmp_path, {"attachments/b.bin": lambda: b_bin.write_bytes(b"short\n")}
    )

    assert (restored / "attachments" / "b.bin").read_bytes() == b"short\n" + bytes(size - 6)
    assert (restored / "attachments" / "a.txt").read_text() == "a\n" * 1000
    assert (restored / "secret").read_text() == "s3cret\n"
    assert (summary.vanished, summary.changed, summary.file_count) == (0, 1, 4)


def test_a_file_that_grows_while_archived_keeps_the_size_it_had(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b_bin = data_dir / "attachments" / "b.bin"
    content = b_bin.read_bytes()

    def grow() -> None:
        with b_bin.open("ab") as stream:
            stream.write(b"appended while archived")

    summary, restored = _archive_with(data_dir, tmp_path, {"attachments/b.bin": grow})

    assert (restored / "attachments" / "b.bin").read_bytes() == content
    assert (restored / "secret").read_text() == "s3cret\n"
    assert (summary.vanished, summary.changed) == (0, 1)
    assert "1 changed while they were read" in caplog.text


def test_a_file_rewritten_in_place_is_counted_as_changed(data_dir: Path, tmp_path: Path) -> None:
    secret = data_dir / "secret"

    def rewrite() -> None:
        secret.write_text("S3CRET\n")
        os.utime(secret, ns=(0, 10**9))

    summary, restored = _archive_with(data_dir, tmp_path, {"secret": rewrite})

    assert (restored / "secret").read_text() == "S3CRET\n"
    assert (summary.vanished, summary.changed) == (0, 1)


@pytest.mark.parametrize("name", ["../escaped", "/etc/escaped", "a/../../escaped"])
def test_extract_refuses_members_outside_the_destination(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        member = tarfile.TarInfo(name)
        member.size = 4
        tar.addfile(member, io.BytesIO(b"evil"))

    (tmp_path / "restored").mkdir()
    with pytest.raises(BackupError, match="outside the data dir"):
        datadir.extract(archive, tmp_path / "restored" / "deep")

    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "restored" / "escaped").exists()


def test_swap_moves_the_current_data_dir_aside_and_never_deletes(
    data_dir: Path, tmp_path: Path
) -> None:
    before = tree(data_dir)
    archive = tmp_path / "data.tar"
    datadir.archive(data_dir, archive)
    (data_dir / "attachments" / "a.txt").write_text("changed\n")
    (data_dir / "new.txt").write_text("new\n")
    changed = tree(data_dir)
    data_dir.with_name("data.replaced-20250301T020000Z").mkdir()

    staging = datadir.extract_beside(archive, data_dir, "20250301T010000Z", None)
    aside = datadir.swap_into_place(
        staging, data_dir, datadir.free_sibling(data_dir, ".replaced-20250301T020000Z")
    )

    assert aside == data_dir.with_name("data.replaced-20250301T020000Z-1")
    assert tree(data_dir) == before
    assert tree(aside) == changed
    assert not staging.exists()


def test_swap_into_a_missing_data_dir_has_nothing_aside(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "data.tar"
    datadir.archive(data_dir, archive)
    target = tmp_path / "elsewhere" / "data"
    target.parent.mkdir()

    staging = datadir.extract_beside(archive, target, "20250301T010000Z", None)

    assert datadir.swap_into_place(staging, target, target.with_name("aside")) is None
    assert tree(target) == tree(data_dir)
    assert not target.with_name("aside").exists()


def test_a_leftover_staging_dir_of_a_killed_restore_is_replaced(
    data_dir: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "data.tar"
    datadir.archive(data_dir, archive)
    leftover = datadir.staging_path(data_dir, "20250301T010000Z")
    leftover.mkdir()
    (leftover / "half-written").write_text("x")

    staging = datadir.extract_beside(archive, data_dir, "20250301T010000Z", None)

    assert staging == leftover
    assert not (staging / "half-written").exists()


def test_restore_refused_when_the_copy_would_not_fit(data_dir: Path) -> None:
    datadir.check_restorable(data_dir, 1, "20250301T010000Z")
    with pytest.raises(BackupError, match="not enough free space"):
        datadir.check_restorable(data_dir, 1 << 62, "20250301T010000Z")


def test_a_resumed_restore_counts_its_own_staging_copy_as_free(data_dir: Path) -> None:
    """The staging copy a killed restore left is removed before extracting again."""
    leftover = datadir.staging_path(data_dir, "20250301T010000Z")
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "half.bin").write_bytes(b"x" * 30_000)
    (leftover / "other.bin").write_bytes(b"y" * 20_000)
    os.link(leftover / "other.bin", leftover / "sub" / "same.bin")
    unrelated = datadir.staging_path(data_dir, "20250301T000000Z")
    unrelated.mkdir()
    (unrelated / "big.bin").write_bytes(b"z" * 90_000)

    def free(path: Path) -> int:
        assert path == data_dir.parent
        return 10_000

    datadir.check_restorable(data_dir, 10_000 + 50_000, "20250301T010000Z", free)
    with pytest.raises(BackupError, match="60001 needed"):
        datadir.check_restorable(data_dir, 10_000 + 50_001, "20250301T010000Z", free)
    with pytest.raises(BackupError, match="not enough free space"):
        datadir.check_restorable(data_dir, 10_000 + 1, "20250301T000001Z", free)


TABLE_OF_CONTENTS = """\
215; 1259 16386 TABLE public issues specivo
214; 1259 16385 SEQUENCE public issues_id_seq specivo
216; 1259 16400 VIEW reports open issues specivo
217; 1259 16401 MATERIALIZED VIEW public it's odd specivo
3321; 0 16386 TABLE DATA public issues specivo
3329; 2606 16393 CONSTRAINT public issues issues_pkey specivo
3330; 0 0 SEQUENCE OWNED BY public issues_id_seq specivo
3331; 0 0 SEQUENCE SET public issues_id_seq specivo
3332; 0 16401 MATERIALIZED VIEW DATA public it's odd specivo
""".splitlines()


def test_relations_are_read_from_the_table_of_contents() -> None:
    assert relations_in(TABLE_OF_CONTENTS) == {
        ("public", "issues"),
        ("public", "issues_id_seq"),
        ("reports", "open issues"),
        ("public", "it's odd"),
    }


def test_drop_missing_keeps_the_dumped_relations_quoted() -> None:
    sql = drop_missing_sql(relations_in(TABLE_OF_CONTENTS))
    assert "('public', 'it''s odd')" in sql
    assert "n.nspname IN ('public', 'reports')" in sql
    assert "DROP %s IF EXISTS %s CASCADE" in sql
    tag = sql.split()[1]
    assert sql.rstrip().endswith(tag) and sql.count(tag) == 2
