"""The approval console (``rollguard console``): review the evidence, sign in the browser."""
