"""Who is calling: credentials (API keys, JWT access tokens) to a Principal, scopes, per-tenant quotas.

Nothing here speaks gRPC: the transport's interceptor reads the call's metadata, asks an
Authenticator for the caller's Principal, checks the RPC's scope and admits turns through
TenantQuotas. Import the modules themselves (`threadline.auth.credentials`, ...).
"""
