"""The Gradio demo (the `demo` extra) and the app of the Hugging Face Space. Importing this package imports no
Gradio: `app` builds and serves the demo (`app.main`), `explain` runs a model on an image and draws its map,
`uploads` checks an upload before it is decoded and keeps uploads in a private folder, and `examples` lists the
example images (also read by the Space's export, which must not need Gradio)."""
