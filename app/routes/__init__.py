"""HTTP routes: thin handlers over the engines in app/serving."""
