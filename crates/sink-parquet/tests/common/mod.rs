//! What both test files read back from committed Parquet.

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;

/// The `__sequence_number` of every row of one file, in file order.
pub(crate) fn sequence_numbers_in<R: ChunkReader + 'static>(file: R) -> Vec<u64> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column_by_name("__sequence_number").unwrap();
        let seqs = column
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        out.extend(seqs.iter().map(|s| s.unwrap().parse::<u64>().unwrap()));
    }
    out
}
