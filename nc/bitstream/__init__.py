"""The `.ncb` container (`container`) and the entropy coders codecs use (`entropy`)."""
