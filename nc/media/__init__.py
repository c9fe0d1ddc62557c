"""Media facts, reading and writing media files, resampling."""
