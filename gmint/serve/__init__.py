"""MINT-Demo: a local web page where people check whether their images trained an audited model.

`audits` loads and checks the published audit folders, `limits` bounds what a browser may send, `uploads`
scores checked images through `gmint.assess` (as `gmint score` does) and `app` is the FastAPI app serving the
page and its JSON API. Like the command line, this package is a shell over the library; nothing imports it.
"""
