// A real OpenID Connect provider (the certified `oidc-provider` package) on loopback, for the
// console's sign-in tests (approvals-http/tests/oidc.rs).
//
//   node .ci/node/oidc-provider.mjs '<config JSON>'
//
// It listens on 127.0.0.1 (port `port`, or any free port when 0 or absent) and prints one JSON
// line on stdout once it answers: {"issuer": "http://127.0.0.1:PORT", "port": PORT, "jwks":
// <its private signing keys>}. It runs until killed (or until its stdin closes, so it never
// outlives the test that spawned it).
//
// The config (every key optional except `clients`):
//   port          port to listen on (0: any)
//   issuer        the issuer identifier (default http://127.0.0.1:PORT)
//   clients       oidc-provider client metadata, e.g. {client_id, client_secret,
//                 redirect_uris, token_endpoint_auth_method: "none"}; `grant_types` and
//                 `response_types` default to the authorization code flow
//   accounts      [{sub, claims: {email, email_verified, name, groups, ...}}]; the claims of
//                 the scopes asked for (openid, email, profile, groups) go into the ID token
//   idTokenTtl    ID token lifetime in seconds (default 3600)
//   jwks          the signing keys (a private JWK set; default a new RSA key); give a second
//                 provider the set the first printed to make its tokens verify with the
//                 first one's keys
//   clockSkew     seconds added to the provider's clock (negative: it runs late, so the
//                 ID tokens it issues are already old when they arrive)
//   discovery     fields that replace those of the discovery document, e.g. point
//                 `token_endpoint` and `authorization_endpoint` at another provider
//   login         the account logged in when the login URL names none (for a browser run
//                 without the test's help)
//   tokenClientAs {"<client id>": {client_id, client_secret}}: the token endpoint takes a
//                 request authenticated (HTTP Basic) as the first client as one from the
//                 second, so a code issued to the second yields an ID token for it
//
// `GET /go?to=URL` answers a page of the provider's site that moves on to URL: a browser sent
// there starts a sign-in from the provider's site, as after a login form on a real provider
// (what decides which cookies browsers send along the redirects that follow).
//
// Sign-in needs no form: the provider redirects the browser to /interaction/UID, and
// `GET /interaction/UID?account=SUB` logs that account in and grants every scope asked for,
// then redirects back to the authorization endpoint, which redirects to the client.
import crypto from 'node:crypto';
import http from 'node:http';
import { Provider } from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? process.env.OIDC_PROVIDER_CONFIG ?? '{}');

if (config.clockSkew) {
  const now = Date.now;
  Date.now = () => now() + config.clockSkew * 1000;
}

const jwks = config.jwks ?? {
  keys: [{
    ...crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
    kid: crypto.randomUUID(),
    alg: 'RS256',
    use: 'sig',
  }],
};

const server = http.createServer();
await new Promise((resolve) => server.listen(config.port ?? 0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = config.issuer ?? `http://127.0.0.1:${port}`;

const accounts = new Map((config.accounts ?? []).map((a) => [a.sub, a.claims ?? {}]));

const provider = new Provider(issuer, {
  clients: (config.clients ?? []).map((c) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    ...c,
  })),
  jwks,
  cookies: { keys: ['approvals-test-cookie-key'] },
  // The scope's claims go into the ID token, as Okta, Entra ID, Google and Keycloak do.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  ttl: { IdToken: config.idTokenTtl ?? 3600 },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  findAccount: (ctx, sub) => {
    const claims = accounts.get(sub);
    if (!claims) return undefined;
    return { accountId: sub, claims: () => ({ ...claims, sub }) };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: (ctx, out) => {
    ctx.type = 'application/json';
    ctx.body = out;
  },
});
provider.proxy = false;

provider.use(async (ctx, next) => {
  const interaction = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (interaction && ctx.method === 'GET') {
    const sub = ctx.query.account ?? config.login;
    if (!sub || !accounts.has(sub)) {
      ctx.status = 400;
      ctx.body = `add ?account=SUB naming one of: ${[...accounts.keys()].join(', ')}`;
      return;
    }
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const grant = new provider.Grant({ accountId: sub, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    const returnTo = await provider.interactionResult(
      ctx.req,
      ctx.res,
      { login: { accountId: sub }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
    ctx.status = 303;
    ctx.set('Location', returnTo);
    return;
  }
  if (ctx.path === '/go' && ctx.method === 'GET') {
    const to = new URL(String(ctx.query.to ?? ''));
    ctx.type = 'html';
    ctx.body = `<!doctype html><meta http-equiv="refresh" content="0;url=${to.href.replace(/"/g, '%22')}">`;
    return;
  }
  if (ctx.path === '/token' && ctx.method === 'POST' && config.tokenClientAs) {
    const basic = ctx.get('authorization').replace(/^Basic\s+/i, '');
    const [id] = Buffer.from(basic, 'base64').toString().split(':');
    const as = config.tokenClientAs[decodeURIComponent(id ?? '')];
    if (as) {
      const credentials = `${encodeURIComponent(as.client_id)}:${encodeURIComponent(as.client_secret)}`;
      ctx.req.headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
    }
  }
  await next();
  if (ctx.path === '/.well-known/openid-configuration' && config.discovery) {
    ctx.body = { ...ctx.body, ...config.discovery };
  }
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, port, jwks })}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
