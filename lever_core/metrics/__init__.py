"""XC evaluation metrics."""
