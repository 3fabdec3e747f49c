"""One service per endpoint family: validation beyond the schema, translation to Triton tensors, results."""
