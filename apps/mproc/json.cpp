// A JSON reader for trace files (placeholder).
