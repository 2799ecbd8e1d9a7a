"""Queue and task names: the only contract between the processes that enqueue jobs and the workers."""

INGEST_QUEUE = "ingest"
TRAIN_QUEUE = "train"

INGEST_DOCUMENT = "expertbot.ingest_document"
FORGET_DOCUMENT = "expertbot.forget_document"
TRAIN_ADAPTER = "expertbot.train_adapter"
TRAIN_NIGHTLY = "expertbot.train_nightly"
