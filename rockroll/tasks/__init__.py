"""Tasks in the formats the field uses, loaded into one model."""
