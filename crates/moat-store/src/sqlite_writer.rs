//! Group commit for SQLite: one task runs every write, many writes per durable commit.
//!
//! SQLite has one writer at a time and, with `synchronous=FULL`, every commit waits for an
//! fsync of the WAL. Committing each write on its own caps the store at one write per fsync.
//! Here the callers queue their writes on a bounded channel; the writer task takes the first
//! one, then whatever else is already queued (up to [`MAX_BATCH`]), and runs them all in one
//! `BEGIN IMMEDIATE` transaction, each multi-statement write in a savepoint of its own, then
//! commits once:
//!
//! ```text
//! callers ──op+oneshot──▶ [channel] ──▶ writer: BEGIN IMMEDIATE
//!                                        SAVEPOINT op; op 1 (2 inserts); RELEASE op
//!                                        SAVEPOINT op; op 2 (fails); ROLLBACK TO op; RELEASE op
//!                                        op 3 (1 statement)
//!                                        …
//!                                        COMMIT (one fsync) ──▶ answer every op
//! ```
//!
//! - A write that fails with a constraint violation or our own check is rolled back to its
//!   savepoint and gets its own error; the others of its batch still commit. A
//!   one-statement write ([`Tx::NotNeeded`]) skips the savepoint
//!   (two of its three round trips to SQLite's thread): SQLite undoes a failed statement by
//!   itself and keeps the transaction, as long as the failure is a constraint violation or
//!   our own check. Any other database error may have ended the transaction, so it fails
//!   the whole batch (rolled back, every write told [`Error::Batch`]).
//! - Before starting a batch the writer yields a few times, so callers that its last commit
//!   woke can queue their next write into this batch instead of the next one.
//! - Answers are sent only after COMMIT returns: a write reported as done is durable. If the
//!   batch's transaction fails (BEGIN, a savepoint statement or COMMIT), every write of the
//!   batch that had not failed by itself gets [`Error::Batch`] with the shared cause, and
//!   none of them is stored.
//! - After a batch whose transaction failed, the writer does not trust its connection again:
//!   SQLite may have rolled the transaction back by itself (a full disk, an I/O error), and
//!   then the driver's own idea of the connection's transaction state is wrong for good. The
//!   next batch opens a new connection (or, for a pool, the borrowed one is closed).
//! - The writer owns a connection of its own to a database file (so reads never wait for a
//!   pool slot behind it). For an in-memory database, which is one connection, and for a
//!   pool given by the caller, it borrows a pool connection for each batch instead: reads
//!   and batches take turns on it.
//! - The task ends when every [`Writer`] handle is dropped (with the store), after the
//!   writes already queued.

use crate::Error;
use crate::writes::{BoxFuture, Tx};
use sqlx::ConnectOptions;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction: bounds the time a batch holds the write lock and the
/// work lost to a failed commit.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to queue theirs.
const QUEUE: usize = 1024;
/// Times the writer yields to other tasks before a batch, collecting writes queued meanwhile.
const GATHER_YIELDS: usize = 8;

/// A handle that queues writes for the writer task. Clones share the task.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Box<dyn Op>>,
}

impl Writer {
    /// Starts the writer task on the current Tokio runtime (which sqlx needs anyway). It
    /// writes on `own` if given (a connection and the options to open another like it),
    /// else on a connection of `pool` for each batch.
    pub(crate) fn spawn(
        pool: SqlitePool,
        own: Option<(SqliteConnection, SqliteConnectOptions)>,
    ) -> Self {
        let (queue, ops) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, own, ops));
        Self { queue }
    }

    /// Runs `f` on the write connection in the next batch; returns once that batch is
    /// committed (or failed).
    /// `tx` says whether the write needs a savepoint (more than one writing statement).
    pub(crate) async fn write<T, F>(&self, tx: Tx, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, Error>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Box::new(Job { tx, f, reply }))
            .await
            .map_err(|_stopped| writer_gone())?;
        answer.await.map_err(|_stopped| writer_gone())?
    }
}

/// The error of a write the writer task can no longer take or answer: it has ended (its
/// runtime shut down, or it panicked).
fn writer_gone() -> Error {
    Error::Database(sqlx::Error::WorkerCrashed)
}

/// A queued write.
trait Op: Send {
    /// Whether the write runs in a savepoint.
    fn tx(&self) -> Tx;
    /// Runs the write on `conn` and keeps its result for the answer.
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Outcome>>;
    /// Answers without running: the batch failed before this write's turn.
    fn fail(self: Box<Self>, cause: Arc<Error>);
}

/// A write that has run, waiting for its batch's commit.
trait Outcome: Send {
    /// The write's error, if it failed.
    fn error(&self) -> Option<&Error>;
    /// Sends the result: the write's own, unless it succeeded and the batch did not commit.
    fn answer(self: Box<Self>, commit: Result<(), &Arc<Error>>);
    /// Ends the batch with this write's error (one that may have ended the transaction):
    /// answers [`Error::Batch`] of it and returns the shared cause for the rest.
    fn into_cause(self: Box<Self>) -> Arc<Error>;
}

/// A write and where its caller waits.
struct Job<T, F> {
    tx: Tx,
    f: F,
    reply: oneshot::Sender<Result<T, Error>>,
}

/// The result of a [`Job`] that ran.
struct Done<T> {
    result: Result<T, Error>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Op for Job<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, Error>> + Send + 'static,
{
    fn tx(&self) -> Tx {
        self.tx
    }

    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Outcome>> {
        let Job { f, reply, .. } = *self;
        Box::pin(async move {
            let result = f(conn).await;
            Box::new(Done { result, reply }) as Box<dyn Outcome>
        })
    }

    fn fail(self: Box<Self>, cause: Arc<Error>) {
        // A caller that stopped waiting has nothing to be told.
        drop(self.reply.send(Err(Error::Batch(cause))));
    }
}

impl<T: Send> Outcome for Done<T> {
    fn error(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }

    fn answer(self: Box<Self>, commit: Result<(), &Arc<Error>>) {
        let result = match (self.result, commit) {
            (Ok(_), Err(cause)) => Err(Error::Batch(Arc::clone(cause))),
            (result, _) => result,
        };
        // A caller that stopped waiting has nothing to be told.
        drop(self.reply.send(result));
    }

    fn into_cause(self: Box<Self>) -> Arc<Error> {
        let cause = Arc::new(match self.result {
            Ok(_) => Error::Database(sqlx::Error::WorkerCrashed),
            Err(e) => e,
        });
        // A caller that stopped waiting has nothing to be told.
        drop(self.reply.send(Err(Error::Batch(Arc::clone(&cause)))));
        cause
    }
}

/// Whether SQLite keeps the transaction after a write failed with `e`: a constraint
/// violation undoes only its statement; our own checks (conflict, not found, corrupt value)
/// touch nothing. Any other database error may have rolled the transaction back.
fn keeps_transaction(e: &Error) -> bool {
    use sqlx::error::ErrorKind;
    match e {
        Error::Conflict(_) | Error::NotFound(_) | Error::Corrupt(_) => true,
        Error::Database(e) => e.as_database_error().is_some_and(|d| {
            matches!(
                d.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
            )
        }),
        Error::Batch(_) | Error::Migrate(_) | Error::UnsupportedUrl => false,
    }
}

/// The writer task: one batch at a time until every handle is gone and the queue is empty.
async fn run(
    pool: SqlitePool,
    own: Option<(SqliteConnection, SqliteConnectOptions)>,
    mut queue: mpsc::Receiver<Box<dyn Op>>,
) {
    let (mut conn, own) = match own {
        Some((conn, options)) => (Some(conn), Some(options)),
        None => (None, None),
    };
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut ops, MAX_BATCH).await > 0 {
        for _ in 0..GATHER_YIELDS {
            tokio::task::yield_now().await;
            while ops.len() < MAX_BATCH {
                let Ok(op) = queue.try_recv() else { break };
                ops.push(op);
            }
        }
        let ops = std::mem::take(&mut ops);
        if let Some(options) = &own {
            if conn.is_none() {
                match options.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        fail_all(ops, e);
                        continue;
                    }
                }
            }
            if let Some(c) = conn.as_mut()
                && !commit_batch(c, ops).await
            {
                // Dropping it closes it; the next batch opens a fresh one.
                conn = None;
            }
        } else {
            match pool.acquire().await {
                Ok(mut borrowed) => {
                    if !commit_batch(&mut borrowed, ops).await {
                        borrowed.close_on_drop();
                    }
                }
                Err(e) => fail_all(ops, e),
            }
        }
    }
    if let Some(conn) = conn
        && let Err(e) = conn.close().await
    {
        tracing::warn!(error = %e, "closing the SQLite write connection failed");
    }
    tracing::debug!("SQLite writer stopped: the store was dropped");
}

/// Answers every op of a batch that could not start with `e`.
fn fail_all(ops: Vec<Box<dyn Op>>, e: sqlx::Error) {
    tracing::warn!(error = ?e, writes = ops.len(), "SQLite write batch failed");
    let cause = Arc::new(Error::Database(e));
    for op in ops {
        op.fail(Arc::clone(&cause));
    }
}

/// Runs `ops` in one transaction on `conn`, commits, and answers each. False if the
/// transaction failed (the connection is not to be used again).
async fn commit_batch(conn: &mut SqliteConnection, ops: Vec<Box<dyn Op>>) -> bool {
    let mut done = Vec::with_capacity(ops.len());
    let mut pending = ops.into_iter().peekable();
    match run_batch(conn, &mut pending, &mut done).await {
        Ok(()) => {
            for outcome in done {
                outcome.answer(Ok(()));
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = ?e, writes = done.len() + pending.len(), "SQLite write batch failed");
            for outcome in done {
                outcome.answer(Err(&e));
            }
            for op in pending {
                op.fail(Arc::clone(&e));
            }
            false
        }
    }
}

/// Runs every op of `pending` in one transaction and commits. Ops that ran move to `done`;
/// on an error of the transaction itself, it is rolled back and the ops not yet run stay in
/// `pending`.
async fn run_batch(
    conn: &mut SqliteConnection,
    pending: &mut std::iter::Peekable<std::vec::IntoIter<Box<dyn Op>>>,
    done: &mut Vec<Box<dyn Outcome>>,
) -> Result<(), Arc<Error>> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(shared)?;
    let ran = async {
        while let Some(op) = pending.peek() {
            let savepoint = op.tx() == Tx::Needed;
            if savepoint {
                execute(&mut tx, "SAVEPOINT op").await?;
            }
            let Some(op) = pending.next() else { break };
            let outcome = op.run(&mut tx).await;
            let failed = outcome.error().is_some();
            // SQLite may have rolled back the whole transaction (a full disk, an I/O error):
            // the savepoint may be gone with it, so the batch ends with this write's own
            // error as the cause (not the failure of a ROLLBACK TO that follows).
            if outcome.error().is_some_and(|e| !keeps_transaction(e)) {
                return Err(outcome.into_cause());
            }
            done.push(outcome);
            if savepoint {
                if failed {
                    execute(&mut tx, "ROLLBACK TO op").await?;
                }
                execute(&mut tx, "RELEASE op").await?;
            }
        }
        Ok(())
    }
    .await;
    match ran {
        Ok(()) => tx.commit().await.map_err(shared),
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a failed SQLite write batch failed");
            }
            Err(e)
        }
    }
}

/// Runs a transaction-control statement of the batch.
async fn execute(conn: &mut SqliteConnection, statement: &'static str) -> Result<(), Arc<Error>> {
    sqlx::query(statement)
        .execute(conn)
        .await
        .map(drop)
        .map_err(shared)
}

/// A database error shared by every write of a batch.
fn shared(e: sqlx::Error) -> Arc<Error> {
    Arc::new(Error::Database(e))
}
