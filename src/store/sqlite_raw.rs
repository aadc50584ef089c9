//! A minimal safe wrapper over prepared SQLite statements on a raw connection handle, for
//! the ledger's hot path: the writer runs its statements synchronously on its own thread
//! instead of one cross-thread round trip per statement (or per commit) through sqlx's worker.
//!
//! The writer owns its connection ([`OwnedConn`], opened here): no other thread ever sees the
//! handle, so a commit costs no round trip to a connection worker.
//!
//! Sound by construction:
//! - a [`Db`] exists only while a `&mut` borrow of its [`OwnedConn`] lives (its only
//!   constructor takes one), so the raw handle is used by one thread at a time and never
//!   after it was closed;
//! - a [`Prepared`] statement has no operations of its own: it must be opened as a [`Stmt`]
//!   with a `&Db` of the same connection (checked), and that `Stmt` borrows the `Db`;
//! - statements are finalized when dropped, which SQLite allows at any time while the
//!   connection is open; their owner declares them before the connection (drop order) and
//!   drops them first when it closes.
#![expect(
    unsafe_code,
    reason = "the one FFI wrapper around the SQLite handle; invariants documented above"
)]

use std::ffi::{CStr, CString, c_int};
use std::ptr::NonNull;

use libsqlite3_sys as ffi;

use super::error::StoreError;

/// Turns off SQLite's allocation statistics for the whole process. With them on (the
/// library's default), every `sqlite3_malloc` and `sqlite3_free` takes a process-wide mutex:
/// about 5 k instructions a gateway call in the ledger's commit. Nothing here reads the
/// statistics (no soft heap limit, no `sqlite3_status`).
///
/// Must run before SQLite is first used, while the process has one thread:
/// `sqlite3_config` is not thread-safe. Called later it refuses (`SQLITE_MISUSE`) and
/// changes nothing; the answer says whether it took.
pub fn skip_allocation_statistics() -> bool {
    // SAFETY: the caller runs this before any other SQLite call and before any other
    // thread exists (documented above); the option takes one `int`.
    unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) == ffi::SQLITE_OK }
}

/// Has SQLite take its memory from mimalloc instead of glibc's `malloc`: a gateway call's
/// commit makes ~70 SQLite allocations, ~15 k instructions through glibc (mimalloc's
/// thread-local free lists take a fraction). The standalone monitor keeps glibc (see
/// `memory`). Same rules as [`skip_allocation_statistics`]: before SQLite is first used,
/// one thread; the answer says whether it took.
pub fn allocate_with_mimalloc() -> bool {
    use libmimalloc_sys as mi;
    use std::ffi::c_void;
    // SAFETY (all five): SQLite passes sizes it computed (never negative: it refuses sizes
    // over 0x7fffff00 itself) and pointers it got from these same functions.
    unsafe extern "C" fn malloc(n: c_int) -> *mut c_void {
        unsafe { mi::mi_malloc(usize::try_from(n).unwrap_or(0)) }
    }
    unsafe extern "C" fn free(p: *mut c_void) {
        unsafe { mi::mi_free(p) }
    }
    unsafe extern "C" fn realloc(p: *mut c_void, n: c_int) -> *mut c_void {
        unsafe { mi::mi_realloc(p, usize::try_from(n).unwrap_or(0)) }
    }
    unsafe extern "C" fn size(p: *mut c_void) -> c_int {
        c_int::try_from(unsafe { mi::mi_usable_size(p) }).unwrap_or(c_int::MAX)
    }
    unsafe extern "C" fn roundup(n: c_int) -> c_int {
        let good = unsafe { mi::mi_good_size(usize::try_from(n).unwrap_or(0)) };
        c_int::try_from(good).unwrap_or(n)
    }
    unsafe extern "C" fn init(_: *mut c_void) -> c_int {
        ffi::SQLITE_OK
    }
    unsafe extern "C" fn shutdown(_: *mut c_void) {}
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(malloc),
        xFree: Some(free),
        xRealloc: Some(realloc),
        xSize: Some(size),
        xRoundup: Some(roundup),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: as `skip_allocation_statistics`; SQLite copies the methods.
    unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) == ffi::SQLITE_OK }
}

/// A read-only connection for scans decoded straight from SQLite's columns (the monitor's
/// feed reads every new request-log row): no driver row type per row, no hop to a driver's
/// worker thread. Each [`ReadOnlyConn::rows`] prepares, steps and finalizes its statement,
/// so no statement outlives a call.
pub struct ReadOnlyConn {
    conn: OwnedConn,
}

// SAFETY: the connection is opened with SQLITE_OPEN_NOMUTEX (SQLite's multi-thread mode: a
// connection may be used from any thread, one at a time). `rows` takes `&mut self`, so its
// owner's exclusive borrow (a `Mutex` in the monitor) is the one-at-a-time, and no statement
// survives a call to be used from another thread.
unsafe impl Send for ReadOnlyConn {}

impl ReadOnlyConn {
    /// Opens the existing database `path` read-only, waiting up to `busy_ms` for locks.
    pub fn open(path: &std::path::Path, busy_ms: i32) -> Result<Self, StoreError> {
        OwnedConn::open_with(path, busy_ms, ffi::SQLITE_OPEN_READONLY).map(|conn| Self { conn })
    }

    /// Runs `sql` (no parameters) and maps each row with `each`.
    pub fn rows<T>(
        &mut self,
        sql: &str,
        mut each: impl FnMut(&Stmt<'_>) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let db = self.conn.db();
        let mut prepared = db.prepare(sql)?;
        let mut st = prepared.on(&db)?;
        let mut out = Vec::new();
        while let Step::Row = st.step()? {
            out.push(each(&st));
        }
        Ok(out)
    }
}

/// A raw database handle, valid for `'h`: the time its [`OwnedConn`] stays borrowed.
pub struct Db<'h> {
    raw: NonNull<ffi::sqlite3>,
    _locked: std::marker::PhantomData<&'h mut ()>,
}

/// A connection opened and owned by its one user (the ledger's writer thread).
pub struct OwnedConn {
    raw: NonNull<ffi::sqlite3>,
}

impl OwnedConn {
    /// Opens the existing database `path` (read-write), waiting up to `busy_ms` for other
    /// connections' locks.
    pub fn open(path: &std::path::Path, busy_ms: i32) -> Result<Self, StoreError> {
        Self::open_with(path, busy_ms, ffi::SQLITE_OPEN_READWRITE)
    }

    fn open_with(path: &std::path::Path, busy_ms: i32, mode: c_int) -> Result<Self, StoreError> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let mut raw: *mut ffi::sqlite3 = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated path; `raw` receives a handle (even on most errors,
        // when it must still be closed) or stays null.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c.as_ptr(),
                &mut raw,
                mode | ffi::SQLITE_OPEN_NOMUTEX,
                std::ptr::null(),
            )
        };
        let Some(raw) = NonNull::new(raw) else {
            return Err(StoreError::Unavailable(format!(
                "open {}: out of memory",
                path.display()
            )));
        };
        let conn = OwnedConn { raw };
        if rc != ffi::SQLITE_OK {
            return Err(error_of(conn.raw, rc));
        }
        // SAFETY: valid open handle.
        unsafe {
            ffi::sqlite3_busy_timeout(conn.raw.as_ptr(), busy_ms);
        }
        Ok(conn)
    }

    pub fn db(&mut self) -> Db<'_> {
        Db {
            raw: self.raw,
            _locked: std::marker::PhantomData,
        }
    }
}

impl Drop for OwnedConn {
    fn drop(&mut self) {
        // SAFETY: closed exactly once, after its statements: their owner declares them
        // before the connection (drop order). Were one still alive, SQLite would refuse to
        // close (SQLITE_BUSY) rather than leave it dangling.
        unsafe {
            ffi::sqlite3_close(self.raw.as_ptr());
        }
    }
}

impl<'h> Db<'h> {
    fn error(&self, code: c_int) -> StoreError {
        error_of(self.raw, code)
    }

    /// Runs SQL without parameters or results (BEGIN, COMMIT, ROLLBACK).
    pub fn exec(&self, sql: &str) -> Result<(), StoreError> {
        let c = CString::new(sql).map_err(|e| StoreError::Other(e.to_string()))?;
        // SAFETY: valid handle, valid NUL-terminated SQL, no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.raw.as_ptr(),
                c.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Prepared, StoreError> {
        let c = CString::new(sql).map_err(|e| StoreError::Other(e.to_string()))?;
        let mut raw: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        // SAFETY: valid handle and SQL; `raw` receives the statement or stays null.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                self.raw.as_ptr(),
                c.as_ptr(),
                -1,
                &mut raw,
                std::ptr::null_mut(),
            )
        };
        match NonNull::new(raw) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(Prepared {
                conn: self.raw,
                stmt,
            }),
            _ => Err(self.error(rc)),
        }
    }
}

/// The error SQLite reports on connection `raw` (valid: a `Db` or a `Stmt` borrowing one
/// is alive wherever this is called).
fn error_of(raw: NonNull<ffi::sqlite3>, code: c_int) -> StoreError {
    // SAFETY: the handle is valid and borrowed (see above); errmsg returns a NUL-terminated
    // string owned by SQLite, copied out immediately.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(raw.as_ptr())) }
        .to_string_lossy()
        .into_owned();
    if super::error::is_storage_fault(&code.to_string()) {
        StoreError::Unavailable(msg)
    } else {
        StoreError::Other(msg)
    }
}

/// A prepared statement kept between uses; usable only as a [`Stmt`] (see [`Prepared::on`]).
pub struct Prepared {
    conn: NonNull<ffi::sqlite3>,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Prepared {
    /// The statement, usable while `db` (its own connection) lives.
    pub fn on<'a>(&'a mut self, db: &'a Db<'_>) -> Result<Stmt<'a>, StoreError> {
        if db.raw != self.conn {
            return Err(StoreError::Other("statement of another connection".into()));
        }
        Ok(Stmt {
            stmt: self.stmt,
            db_raw: db.raw,
            _borrow: std::marker::PhantomData,
        })
    }
}

/// A statement in use: borrows its [`Prepared`] and the [`Db`].
pub struct Stmt<'a> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db_raw: NonNull<ffi::sqlite3>,
    _borrow: std::marker::PhantomData<&'a mut Prepared>,
}

pub enum Step {
    Row,
    Done,
}

impl Stmt<'_> {
    fn error(&self, rc: c_int) -> StoreError {
        error_of(self.db_raw, rc)
    }

    fn check(&self, rc: c_int) -> Result<(), StoreError> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    /// Resets the statement and clears its bindings, ready for the next execution.
    pub fn reset(&mut self) {
        // SAFETY: valid statement. Errors of the previous step are reported by `step`.
        unsafe {
            ffi::sqlite3_reset(self.stmt.as_ptr());
            ffi::sqlite3_clear_bindings(self.stmt.as_ptr());
        }
    }

    /// Binds a 1-based parameter.
    pub fn bind_i64(&mut self, idx: c_int, v: i64) -> Result<(), StoreError> {
        // SAFETY: valid statement; SQLite checks the index.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.stmt.as_ptr(), idx, v) };
        self.check(rc)
    }

    pub fn bind_opt_i64(&mut self, idx: c_int, v: Option<i64>) -> Result<(), StoreError> {
        match v {
            Some(v) => self.bind_i64(idx, v),
            // SAFETY: valid statement; SQLite checks the index.
            None => self.check(unsafe { ffi::sqlite3_bind_null(self.stmt.as_ptr(), idx) }),
        }
    }

    pub fn bind_opt_text(&mut self, idx: c_int, v: Option<&str>) -> Result<(), StoreError> {
        match v {
            Some(s) => {
                let len = c_int::try_from(s.len())
                    .map_err(|_| StoreError::Other("text too long".into()))?;
                // SAFETY: valid statement; SQLITE_TRANSIENT makes SQLite copy the bytes
                // before returning, so `s` need not outlive the call.
                let rc = unsafe {
                    ffi::sqlite3_bind_text(
                        self.stmt.as_ptr(),
                        idx,
                        s.as_ptr().cast(),
                        len,
                        ffi::SQLITE_TRANSIENT(),
                    )
                };
                self.check(rc)
            }
            // SAFETY: as above.
            None => self.check(unsafe { ffi::sqlite3_bind_null(self.stmt.as_ptr(), idx) }),
        }
    }

    /// Rows the connection's last finished `INSERT`, `UPDATE` or `DELETE` changed.
    pub fn changes(&self) -> i64 {
        // SAFETY: valid connection handle, borrowed for the statement's life.
        unsafe { ffi::sqlite3_changes64(self.db_raw.as_ptr()) }
    }

    /// Runs a statement that takes no parameters and returns no rows, ready again after.
    pub fn run(&mut self) -> Result<(), StoreError> {
        self.reset();
        let out = self.step().map(|_| ());
        self.reset();
        out
    }

    pub fn step(&mut self) -> Result<Step, StoreError> {
        // SAFETY: valid statement, bound parameters live inside SQLite (TRANSIENT).
        match unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(Step::Row),
            ffi::SQLITE_DONE => Ok(Step::Done),
            rc => Err(self.error(rc)),
        }
    }

    /// A 0-based column of the current row; `None` for NULL.
    pub fn column_opt_i64(&self, col: c_int) -> Option<i64> {
        // SAFETY: only called after `step` returned `Row`; SQLite checks the index.
        unsafe {
            if ffi::sqlite3_column_type(self.stmt.as_ptr(), col) == ffi::SQLITE_NULL {
                None
            } else {
                Some(ffi::sqlite3_column_int64(self.stmt.as_ptr(), col))
            }
        }
    }

    pub fn column_i64(&self, col: c_int) -> i64 {
        self.column_opt_i64(col).unwrap_or(0)
    }

    pub fn column_opt_text(&self, col: c_int) -> Option<String> {
        // SAFETY: after a `Row` step; the pointer is valid until the next step/reset, and
        // the bytes are copied out at once.
        unsafe {
            let p = ffi::sqlite3_column_text(self.stmt.as_ptr(), col);
            if p.is_null() {
                return None;
            }
            let n = ffi::sqlite3_column_bytes(self.stmt.as_ptr(), col);
            let bytes = std::slice::from_raw_parts(p, usize::try_from(n).unwrap_or(0));
            Some(String::from_utf8_lossy(bytes).into_owned())
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: the statement is finalized exactly once, before its connection closes
        // (the writer drops its statements before closing the connection).
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::ConnectOptions;

    /// Rows come back column by column (NULL as `None`), from another thread than the one
    /// that opened the connection, and the connection cannot write.
    #[tokio::test]
    async fn a_read_only_connection_reads_rows_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let mut c = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT)")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1, 7, 'é\"x'), (2, NULL, NULL)")
            .execute(&mut c)
            .await
            .unwrap();
        let mut conn = ReadOnlyConn::open(&path, 1000).unwrap();
        let rows = std::thread::spawn(move || {
            let rows = conn
                .rows("SELECT id, n, s FROM t ORDER BY id", |r| {
                    (r.column_i64(0), r.column_opt_i64(1), r.column_opt_text(2))
                })
                .unwrap();
            let write = conn.rows("INSERT INTO t VALUES (3, 1, 'w')", |_| ());
            (rows, write.err().map(|e| e.to_string()))
        })
        .join()
        .unwrap();
        assert_eq!(
            rows.0,
            vec![(1, Some(7), Some("é\"x".to_owned())), (2, None, None)]
        );
        assert!(rows.1.unwrap_or_default().contains("readonly"));
    }
}
