//! What can go wrong, and whether waiting may fix it.

use std::path::{Path, PathBuf};

use dynamo_cdc_core::SinkError;
use dynamo_cdc_object_store::ObjectError;

use crate::catalog::is_transient;

/// The sink could not write or commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IcebergSinkError {
    /// A local file operation failed (a full or read-only disk).
    #[error("cannot {action} {path}")]
    Io {
        /// what was being done
        action: &'static str,
        /// where
        path: PathBuf,
        /// the I/O error
        #[source]
        source: std::io::Error,
    },
    /// Writing a data file failed: the disk or spool under it.
    #[error("cannot write data file {file}")]
    Write {
        /// the data file
        file: String,
        /// the parquet error, which wraps the I/O error
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A Parquet setting was refused.
    #[error("parquet error on {file}")]
    Parquet {
        /// the data file
        file: String,
        /// the parquet error
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Rows could not be laid out under the table's fields.
    #[error("cannot lay out rows for {file}")]
    Arrow {
        /// the data file or table
        file: String,
        /// the arrow error
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// An upload to the warehouse's bucket failed; its class says whether it
    /// may pass.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The catalog or the table's metadata failed.
    #[error("cannot {doing}")]
    Catalog {
        /// what was being done, naming the table
        doing: String,
        /// the Iceberg error (boxed: it is large)
        #[source]
        source: Box<iceberg::Error>,
    },
    /// The table holds something this sink cannot continue.
    #[error("cannot continue table {table}: {reason}")]
    Table {
        /// the Iceberg table
        table: String,
        /// what is wrong
        reason: String,
    },
    /// Another writer committed changes this sink was about to commit.
    #[error(
        "another writer committed changes of table {table} first ({shards}): the uncommitted data files were dropped and the run resumes from the table's position"
    )]
    Overtaken {
        /// the Iceberg table
        table: String,
        /// the shards both wrote
        shards: String,
    },
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IcebergSinkError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| IcebergSinkError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn catalog(doing: impl Into<String>) -> impl FnOnce(iceberg::Error) -> Self {
        let doing = doing.into();
        move |source| IcebergSinkError::Catalog {
            doing,
            source: Box::new(source),
        }
    }
}

impl From<IcebergSinkError> for SinkError {
    /// Disks, buckets and catalogs that fail may come back, and a writer
    /// that lost a race resumes from the table; a table this sink cannot
    /// continue, denied access and a missing bucket need a person.
    fn from(e: IcebergSinkError) -> Self {
        let transient = match &e {
            IcebergSinkError::Io { .. }
            | IcebergSinkError::Write { .. }
            | IcebergSinkError::Overtaken { .. } => true,
            IcebergSinkError::Object(o) => o.is_transient(),
            IcebergSinkError::Catalog { source, .. } => is_transient(source),
            IcebergSinkError::Parquet { .. }
            | IcebergSinkError::Arrow { .. }
            | IcebergSinkError::Table { .. }
            | IcebergSinkError::Internal(_) => false,
        };
        if transient {
            SinkError::transient(e)
        } else {
            SinkError::fatal(e)
        }
    }
}
