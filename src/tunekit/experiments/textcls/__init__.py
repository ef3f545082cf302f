"""What the classification experiments (`tunekit run imbalanced`, `tunekit run tricks`) share: offline
text-classification data from the standard library (`data`), a tiny BERT with a locally built WordPiece,
pre-trained and fine-tuned through tunekit's Trainer integration (`model`), the binary metrics (`metrics`),
their common options (`config`) and the cached preparation both run first (`prepare`). Their reports'
summaries over seeds are `tunekit.experiments.report_parts`."""
