# Makes `import fastcrnn` resolve to this source tree (built in place or installed editable).
