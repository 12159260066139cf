"""ML fixtures (tiny random BERT, sample data)."""
