"""Raw dataset folders and annotation sheets in, sample records out. No pixels are processed here."""
