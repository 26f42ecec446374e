// The replica set rs0 and EventFlow's MongoDB users, made once and checked at every start of mongo-0.
//
// Run by mongosh (`mongosh --nodb --quiet --file rs-init.js`) in the rs-init container of each mongo pod; only
// mongo-0's does anything. It follows MongoDB's procedure for a replica set with key-file authentication:
// through 127.0.0.1 (mongod's localhost exception, which allows what it takes to make the first user), it
// initiates rs0 with this member alone and creates the root user; then, as root, it makes one user per
// service with readWrite on that service's database only (as compose/mongo/initdb/10-eventflow-users.js
// does for docker-compose) and adds the other members one at a time, each once it answers. Every step looks
// first and does only what is missing, so a restart of mongo-0 runs it again safely: passwords changed in the
// Secret are given to the users (updateUser), members added to the StatefulSet are added to the set.
//
// Environment: POD_NAME (mongo-N), MONGO_SERVICE_DOMAIN (the headless Service's domain, e.g.
// mongo.eventflow.svc.cluster.local), MONGO_MEMBERS (the StatefulSet's replicas), MONGO_ROOT_PASSWORD_FILE,
// and EVENTFLOW_MONGO_{USUARIOS,EVENTOS,RESERVAS}_PASSWORD (the .env of `eventflow compose-secrets`).

const fs = require('fs');

const SET = 'rs0';
const PORT = 27017;
const SERVICES = [
  { user: 'usuarios', variable: 'EVENTFLOW_MONGO_USUARIOS_PASSWORD', database: 'eventflow_usuarios' },
  { user: 'eventos', variable: 'EVENTFLOW_MONGO_EVENTOS_PASSWORD', database: 'eventflow_eventos' },
  { user: 'reservas', variable: 'EVENTFLOW_MONGO_RESERVAS_PASSWORD', database: 'eventflow_reservas' },
];
// The rule infra/compose_secrets.py (PASSWORD_RULE) applies: the password goes into a URI unescaped.
const PASSWORD_RULE = /^[A-Za-z0-9_-]{16,}$/;
// Answers to a reconfiguration that is worth trying again in a moment (the previous one is not committed yet).
const RECONFIG_RETRY = ['CurrentConfigNotCommittedYet', 'ConfigurationInProgress', 'NotWritablePrimary', 'NotYetInitialized'];

function log(message) {
  print('rs-init: ' + message);
}

function password(name, value) {
  if (!PASSWORD_RULE.test(value || '')) {
    throw new Error(name + ' must be at least 16 letters, digits, - or _ (make it with `eventflow compose-secrets`)');
  }
  return value;
}

function admin(uri) {
  return new Mongo(uri).getDB('admin');
}

function hello(host) {
  try {
    return admin('mongodb://' + host + '/?directConnection=true&serverSelectionTimeoutMS=2000').runCommand({ hello: 1 });
  } catch (error) {
    return null;
  }
}

function waitFor(what, check, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error('gave up after ' + seconds + ' s waiting for ' + what);
    }
    sleep(1000);
  }
}

function main(env) {
  const pod = /^(.+)-(\d+)$/.exec(env.POD_NAME || '');
  if (!pod) {
    throw new Error('POD_NAME must be the pod of a StatefulSet (name-ordinal), got ' + env.POD_NAME);
  }
  if (pod[2] !== '0') {
    log(env.POD_NAME + ' waits to be added by ' + pod[1] + '-0');
    return;
  }
  const members = Number(env.MONGO_MEMBERS);
  if (!(members >= 1)) {
    throw new Error('MONGO_MEMBERS must be the number of members, got ' + env.MONGO_MEMBERS);
  }
  const host = (ordinal) => pod[1] + '-' + ordinal + '.' + env.MONGO_SERVICE_DOMAIN + ':' + PORT;
  const root = password('the root password', fs.readFileSync(env.MONGO_ROOT_PASSWORD_FILE, 'utf8').trim());
  const users = SERVICES.map((s) => ({ ...s, pwd: password(s.variable, env[s.variable]) }));

  const here = '127.0.0.1:' + PORT;
  waitFor('mongod on ' + here, () => hello(here), 300);
  const local = admin('mongodb://' + here + '/?directConnection=true');

  if (!local.runCommand({ hello: 1 }).setName) {
    try {
      local.runCommand({ replSetInitiate: { _id: SET, members: [{ _id: 0, host: host(0) }] } });
      log('replica set ' + SET + ' initiated with ' + host(0));
    } catch (error) {
      if (error.codeName !== 'AlreadyInitialized') {
        throw error;
      }
    }
  }

  let hasRoot = true;
  try {
    local.auth('root', root);
  } catch (error) {
    if (error.codeName !== 'AuthenticationFailed') {
      throw error;
    }
    hasRoot = false;
  }
  if (!hasRoot) {
    waitFor(host(0) + ' to be primary', () => local.runCommand({ hello: 1 }).isWritablePrimary, 120);
    try {
      local.runCommand({ createUser: 'root', pwd: root, roles: [{ role: 'root', db: 'admin' }] });
    } catch (error) {
      if (error.codeName === 'Unauthorized') {
        throw new Error('MongoDB has users already, but root does not take the password of the Secret: ' +
          'give root that password again (db.changeUserPassword as root), or start from empty volumes');
      }
      throw error;
    }
    log('MongoDB user root created');
  }

  const primary = admin('mongodb://root:' + root + '@' + here + '/?replicaSet=' + SET + '&authSource=admin');
  for (const user of users) {
    const spec = { pwd: user.pwd, roles: [{ role: 'readWrite', db: user.database }] };
    const exists = primary.runCommand({ usersInfo: user.user }).users.length > 0;
    primary.runCommand(exists ? { updateUser: user.user, ...spec } : { createUser: user.user, ...spec });
    log('MongoDB user ' + user.user + ': readWrite on ' + user.database + (exists ? ' (kept)' : ' (created)'));
  }

  for (let ordinal = 1; ordinal < members; ordinal++) {
    const wanted = host(ordinal);
    waitFor(wanted + ' to join', () => {
      const config = primary.runCommand({ replSetGetConfig: 1 }).config;
      if (config.members.some((m) => m.host === wanted)) {
        return true;
      }
      if (!hello(wanted)) {
        return false;
      }
      config.version += 1;
      delete config.term;
      config.members.push({ _id: Math.max(...config.members.map((m) => m._id)) + 1, host: wanted });
      try {
        primary.runCommand({ replSetReconfig: config });
      } catch (error) {
        if (RECONFIG_RETRY.includes(error.codeName)) {
          return false;
        }
        throw error;
      }
      log(wanted + ' added to ' + SET);
      return true;
    }, 900);
  }
  log('replica set ' + SET + ': ' + members + ' member(s), users ready');
}

main(process.env);
