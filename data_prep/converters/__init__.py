"""Dataset converters: each public CXR dataset (and EasyR1/verl files) into the record schema."""
