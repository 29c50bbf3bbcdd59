"""The playground: a local web page to generate from any trained run."""
