//! The rollup on disk, so a restart reads only the rows added since: a header (format,
//! which source, where the feed stood, the interned values), then one record per hourly
//! chunk, each length-prefixed and encoded with `postcard`, so loading streams chunk by
//! chunk. Written to a temporary file, synced, then renamed over the old one: a crash leaves
//! the previous snapshot whole. Anything unexpected (another format, another source, a
//! truncated file) is refused and the rollup loads from the source as on a first start.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::archive::{Archive, Stored};
use super::chunk::ChunkRecord;
use super::data::{Data, Interner};

const MAGIC: &[u8; 8] = b"QPROLL01";
/// Bumped whenever the layout of `Header` or `ChunkRecord` changes.
const FORMAT: u32 = 4;
/// No single record is larger (a busy hour of 20 M rows would be ~1.6 GB).
const MAX_RECORD: u64 = 4 << 30;

/// Where the feed stood and what the chunks refer to.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    source: String,
    unit: i64,
    covered_from: i64,
    min_id: i64,
    last_id: i64,
    /// Ids a recent page skipped (transactions in flight): asked for again after a restart.
    gaps: Vec<i64>,
    users: Vec<i64>,
    tokens: Vec<i64>,
    models: Vec<String>,
    channels: Vec<String>,
    ips: Vec<String>,
    names: Vec<String>,
    /// The hours held on disk by the archive, and its next file number.
    archived: Vec<(i64, Stored)>,
    next_generation: u64,
    chunks: u64,
}

/// What a snapshot restores besides the rows.
#[derive(Debug)]
pub struct Restored {
    pub data: Data,
    pub last_id: i64,
    pub gaps: Vec<i64>,
}

/// The snapshot file for one source, in `dir`: named by a digest of the source, so two
/// sources never share one and no DSN (or its password) appears in a file name.
pub fn path_for(dir: &Path, source: &str) -> PathBuf {
    dir.join(format!("monitor-rollup-{}.bin", source_digest(source)))
}

/// The archive's directory beside the snapshot at `path`.
pub fn archive_dir(path: &Path) -> PathBuf {
    path.with_extension("archive")
}

fn source_digest(source: &str) -> String {
    hex::encode(&Sha256::digest(source.as_bytes())[..8])
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding: {0}")]
    Encoding(#[from] postcard::Error),
    #[error("{0}")]
    Refused(&'static str),
    #[error("archive: {0}")]
    Archive(#[from] super::archive::ArchiveError),
}

fn write_record(w: &mut impl Write, v: &impl Serialize) -> Result<(), SnapshotError> {
    let bytes = postcard::to_stdvec(v)?;
    w.write_all(&(bytes.len() as u64).to_le_bytes())?;
    w.write_all(&bytes)?;
    Ok(())
}

fn read_record<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<T, SnapshotError> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_RECORD {
        return Err(SnapshotError::Refused("record too large"));
    }
    buf.resize(len as usize, 0);
    r.read_exact(buf)?;
    Ok(postcard::from_bytes(buf)?)
}

/// Writes `data` (with where the feed stands) to `path`, atomically.
pub fn save(
    path: &Path,
    source: &str,
    data: &Data,
    last_id: i64,
    gaps: &[i64],
) -> Result<u64, SnapshotError> {
    // The files the snapshot names must outlive a crash as surely as the snapshot itself.
    if let Some(a) = &data.archive {
        a.sync()?;
    }
    let (archived, next_generation) = data
        .archive
        .as_ref()
        .map(Archive::listing)
        .unwrap_or_default();
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(MAGIC)?;
    let header = Header {
        format: FORMAT,
        source: source_digest(source),
        unit: data.unit,
        covered_from: data.covered_from,
        min_id: data.min_id,
        last_id,
        gaps: gaps.to_vec(),
        users: data.users.values().to_vec(),
        tokens: data.tokens.values().to_vec(),
        models: data.models.values().to_vec(),
        channels: data.channels.values().to_vec(),
        ips: data.ips.values().to_vec(),
        names: data.names.values().to_vec(),
        archived,
        next_generation,
        chunks: data.chunks.len() as u64,
    };
    write_record(&mut w, &header)?;
    for (hour, c) in &data.chunks {
        write_record(&mut w, &c.record(*hour))?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(size)
}

/// Reads the snapshot at `path` if it is of this format and this source; `Ok(None)` when
/// there is none.
/// Its archive, if it names one, must be in `archive_dir` as it was.
pub fn load(
    path: &Path,
    source: &str,
    unit: i64,
    archive_dir: Option<&Path>,
) -> Result<Option<Restored>, SnapshotError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(SnapshotError::Refused("not a rollup snapshot"));
    }
    let mut buf = Vec::new();
    let h: Header = read_record(&mut r, &mut buf)?;
    if h.format != FORMAT {
        return Err(SnapshotError::Refused("another snapshot format"));
    }
    if h.source != source_digest(source) || h.unit != unit {
        return Err(SnapshotError::Refused("another source"));
    }
    let mut data = Data::new(unit);
    data.users = Interner::from_values(h.users);
    data.tokens = Interner::from_values(h.tokens);
    data.models = Interner::from_values(h.models);
    data.channels = Interner::from_values(h.channels);
    data.ips = Interner::from_values(h.ips);
    data.names = Interner::from_values(h.names);
    data.covered_from = h.covered_from;
    data.min_id = h.min_id;
    let limits = data.limits();
    let mut chunks = BTreeMap::new();
    let mut rows = 0usize;
    for _ in 0..h.chunks {
        let c: ChunkRecord<'static> = read_record(&mut r, &mut buf)?;
        let (hour, c) = c
            .into_chunk(unit, &limits)
            .map_err(SnapshotError::Refused)?;
        rows += c.len();
        chunks.insert(hour, c);
    }
    if !h.archived.is_empty() || archive_dir.is_some() {
        let dir = archive_dir.ok_or(SnapshotError::Refused("archive without a directory"))?;
        if h.archived.is_empty() {
            data.archive = Some(Archive::fresh(dir)?);
        } else {
            data.archive = Some(Archive::restore(dir, h.archived, h.next_generation)?);
        }
    }
    data.chunks = chunks;
    data.rows = rows;
    Ok(Some(Restored {
        data,
        last_id: h.last_id,
        gaps: h.gaps,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::data::Row;
    use super::*;

    fn row(id: i64, ts: i64) -> Row {
        Row {
            id,
            ts,
            user: id % 7,
            token: id % 5,
            model: format!("m{}", id % 3),
            channel: "1".into(),
            tokens: id * 10,
            // Some counts beyond 32 bits, and a negative one, kept aside.
            quota: if id % 50 == 0 {
                1 << 40
            } else if id == 7 {
                -3
            } else {
                id
            },
            ip: format!("10.0.0.{}", id % 4),
            username: format!("u{}", id % 7),
            token_name: format!("k{}", id % 5),
        }
    }

    fn ids(d: &Data) -> Vec<(i64, i64, i64, i64, String)> {
        let mut out = Vec::new();
        d.scan(i64::MIN / 2, i64::MAX / 2, |c, i| {
            out.push((
                c.id(i),
                c.ts(i),
                c.tokens(i),
                c.quota(i),
                d.models.get(c.model[i]).clone(),
            ))
        });
        out
    }

    #[test]
    fn a_snapshot_restores_every_row_and_where_the_feed_stood() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Data::new(1);
        d.covered_from = 0;
        for id in 1..=500 {
            d.push(&row(id, id * 97));
        }
        d.settle();
        let path = path_for(dir.path(), "newapi sqlite:/x.db");
        save(&path, "newapi sqlite:/x.db", &d, 500, &[42]).unwrap();
        let r = load(&path, "newapi sqlite:/x.db", 1, None)
            .unwrap()
            .unwrap();
        assert_eq!(r.last_id, 500);
        assert_eq!(r.gaps, vec![42]);
        assert_eq!(r.data.rows, 500);
        assert_eq!(r.data.covered_from, 0);
        assert_eq!(ids(&r.data), ids(&d));
        assert!(ids(&d).iter().any(|r| r.3 == 1 << 40) && ids(&d).iter().any(|r| r.3 == -3));
        // New rows after a restore are interned alongside the restored ones.
        let mut restored = r.data;
        restored.push(&row(501, 501 * 97));
        assert_eq!(restored.rows, 501);
        assert_eq!(
            restored.models.find(&"m0".to_owned()),
            d.models.find(&"m0".to_owned())
        );
    }

    #[test]
    fn another_source_or_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Data::new(1000);
        d.covered_from = 0;
        d.push(&row(1, 5000));
        let path = dir.path().join("s.bin");
        save(&path, "a", &d, 1, &[]).unwrap();
        assert!(matches!(
            load(&path, "b", 1000, None),
            Err(SnapshotError::Refused(_))
        ));
        assert!(load(&path, "a", 1, None).is_err(), "another unit");
        assert!(
            load(&dir.path().join("none.bin"), "a", 1000, None)
                .unwrap()
                .is_none()
        );
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(load(&path, "a", 1000, None).is_err(), "truncated");
        std::fs::write(&path, b"garbage!garbage!").unwrap();
        assert!(load(&path, "a", 1000, None).is_err());
    }

    #[test]
    fn a_snapshot_names_its_archive_and_later_files_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "src");
        let adir = archive_dir(&path);
        let mut d = Data::new(1);
        d.covered_from = 0;
        d.archive = Some(Archive::fresh(&adir).unwrap());
        for id in 1..=500 {
            d.push(&row(id, id * 97));
        }
        d.fit(100);
        d.settle();
        let before = ids(&d);
        assert!(d.archived_rows() >= 400);
        save(&path, "src", &d, 500, &[]).unwrap();
        // After the snapshot: a late row rewrites an archived hour under a new file.
        d.push(&row(501, 50));
        d.fit(100);
        assert_eq!(ids(&d).len(), 501);
        let r = load(&path, "src", 1, Some(&adir)).unwrap().unwrap();
        assert_eq!(
            ids(&r.data),
            before,
            "the state the snapshot named, not the later one"
        );
        assert_eq!(r.data.rows + r.data.archived_rows(), 500);
        // A named file gone: the snapshot is refused (the rollup loads from the source).
        let named = std::fs::read_dir(&adir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::remove_file(named).unwrap();
        assert!(load(&path, "src", 1, Some(&adir)).is_err());
        assert!(
            load(&path, "src", 1, None).is_err(),
            "an archive needs its directory"
        );
    }
}
