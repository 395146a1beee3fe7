"""Progressive delivery: ship a candidate at 0 %, step its traffic behind metric gates, roll back."""
