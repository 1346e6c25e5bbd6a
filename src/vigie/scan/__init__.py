"""Content scan: detectors of PII and secrets in the values a policy keeps."""
