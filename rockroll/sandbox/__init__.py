"""Isolated environments in which agents run commands."""
