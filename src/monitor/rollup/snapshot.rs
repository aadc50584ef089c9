//! The rollup on disk, so a restart reads only the rows added since: a header (format,
//! which source, where the feed stood, the interned values), then one record per hourly
//! chunk, each length-prefixed and encoded with `postcard`, so loading streams chunk by
//! chunk. Written to a temporary file, synced, then renamed over the old one: a crash leaves
//! the previous snapshot whole. Anything unexpected (another format, another source, a
//! truncated file) is refused and the rollup loads from the source as on a first start.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::data::{Chunk, Data, Interner};

const MAGIC: &[u8; 8] = b"QPROLL01";
/// Bumped whenever the layout of `Header` or `ChunkRecord` changes.
const FORMAT: u32 = 2;
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
    chunks: u64,
}

/// One hourly chunk: borrowed from the rollup when written (no copy of the columns),
/// owned when read.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkRecord<'a> {
    hour: i64,
    base: i64,
    id: Cow<'a, [i64]>,
    ts: Cow<'a, [u32]>,
    user: Cow<'a, [u32]>,
    token: Cow<'a, [u32]>,
    model: Cow<'a, [u32]>,
    channel: Cow<'a, [u32]>,
    ip: Cow<'a, [u32]>,
    uname: Cow<'a, [u32]>,
    tname: Cow<'a, [u32]>,
    tokens: Cow<'a, [u32]>,
    quota: Cow<'a, [u32]>,
    wide_tokens: Vec<(i64, i64)>,
    wide_quota: Vec<(i64, i64)>,
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
        chunks: data.chunks.len() as u64,
    };
    write_record(&mut w, &header)?;
    for (hour, c) in &data.chunks {
        write_record(
            &mut w,
            &ChunkRecord {
                hour: *hour,
                base: c.base,
                id: Cow::Borrowed(&c.id),
                ts: Cow::Borrowed(&c.ts),
                user: Cow::Borrowed(&c.user),
                token: Cow::Borrowed(&c.token),
                model: Cow::Borrowed(&c.model),
                channel: Cow::Borrowed(&c.channel),
                ip: Cow::Borrowed(&c.ip),
                uname: Cow::Borrowed(&c.uname),
                tname: Cow::Borrowed(&c.tname),
                tokens: Cow::Borrowed(&c.tokens),
                quota: Cow::Borrowed(&c.quota),
                wide_tokens: c.wide_tokens.iter().map(|(k, v)| (*k, *v)).collect(),
                wide_quota: c.wide_quota.iter().map(|(k, v)| (*k, *v)).collect(),
            },
        )?;
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
pub fn load(path: &Path, source: &str, unit: i64) -> Result<Option<Restored>, SnapshotError> {
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
    let limits = [
        data.users.len(),
        data.tokens.len(),
        data.models.len(),
        data.channels.len(),
        data.ips.len(),
        data.names.len(),
    ];
    let mut chunks = BTreeMap::new();
    let mut rows = 0usize;
    for _ in 0..h.chunks {
        let c: ChunkRecord<'static> = read_record(&mut r, &mut buf)?;
        let n = c.ts.len();
        let same_len = [
            c.id.len(),
            c.user.len(),
            c.token.len(),
            c.model.len(),
            c.channel.len(),
            c.ip.len(),
            c.uname.len(),
            c.tname.len(),
            c.tokens.len(),
            c.quota.len(),
        ]
        .iter()
        .all(|&l| l == n);
        // Every interned reference must point inside its table.
        let refs_ok = [
            (&c.user, limits[0]),
            (&c.token, limits[1]),
            (&c.model, limits[2]),
            (&c.channel, limits[3]),
            (&c.ip, limits[4]),
            (&c.uname, limits[5]),
            (&c.tname, limits[5]),
        ]
        .iter()
        .all(|(col, max)| col.iter().all(|&v| (v as usize) < *max));
        let hour_ok = c.base == c.hour * 3600 * unit;
        if !same_len || !refs_ok || !hour_ok {
            return Err(SnapshotError::Refused("inconsistent chunk"));
        }
        rows += n;
        chunks.insert(
            c.hour,
            Chunk {
                base: c.base,
                id: c.id.into_owned(),
                ts: c.ts.into_owned(),
                user: c.user.into_owned(),
                token: c.token.into_owned(),
                model: c.model.into_owned(),
                channel: c.channel.into_owned(),
                ip: c.ip.into_owned(),
                uname: c.uname.into_owned(),
                tname: c.tname.into_owned(),
                tokens: c.tokens.into_owned(),
                quota: c.quota.into_owned(),
                wide_tokens: c.wide_tokens.into_iter().collect(),
                wide_quota: c.wide_quota.into_iter().collect(),
                // Saved chunks are settled: sorted by time.
                unsorted: false,
            },
        );
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
                c.id[i],
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
        let r = load(&path, "newapi sqlite:/x.db", 1).unwrap().unwrap();
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
            load(&path, "b", 1000),
            Err(SnapshotError::Refused(_))
        ));
        assert!(load(&path, "a", 1).is_err(), "another unit");
        assert!(
            load(&dir.path().join("none.bin"), "a", 1000)
                .unwrap()
                .is_none()
        );
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(load(&path, "a", 1000).is_err(), "truncated");
        std::fs::write(&path, b"garbage!garbage!").unwrap();
        assert!(load(&path, "a", 1000).is_err());
    }
}
