"""Aggregate run folders (see the run-folder contract) into tables and plots."""
