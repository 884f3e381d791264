"""tlbench-text: text classification with BERT-family encoders, offline (see README.md)."""
