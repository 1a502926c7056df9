"""Run an agent over a task set and report how it did."""
