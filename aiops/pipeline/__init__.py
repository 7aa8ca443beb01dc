"""The data path: decoded batches -> series registry -> detectors -> post-rules -> alerts."""
