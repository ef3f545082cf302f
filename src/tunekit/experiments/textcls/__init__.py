"""What the classification experiments (`tunekit run imbalanced`, `tunekit run tricks`) share: offline
text-classification data from the standard library (`data`), a tiny BERT with a locally trained WordPiece,
pre-trained and fine-tuned through tunekit's Trainer integration (`model`), hand-written metrics
(`metrics`), mean ± sd over seeds and the spread test (`summary`), their common options (`config`) and the
cached preparation both run first (`prepare`)."""
