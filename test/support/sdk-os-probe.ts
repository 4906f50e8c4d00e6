/**
 * The Azure SDK builds its user agent with `getos`, which reads /etc/os-release and then loads a
 * distribution module asynchronously, once per module registry. A test file that ends before that
 * read finishes makes Jest log "import after the environment has been torn down" and exit 1 with
 * every test passed. Probing once before the file's tests caches the answer, so the SDK's own
 * probe answers at once.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const getos = require('getos') as (cb: (error: unknown) => void) => void;

beforeAll(() => new Promise<void>((resolve) => getos(() => resolve())));
