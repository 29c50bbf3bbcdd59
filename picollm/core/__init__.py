"""The bottom layer: errors, settings -> flags and checks, logging, the one atomic write, devices, CPU sharing
and the worker pool. Imports nothing else of picollm."""
