// One MongoDB user per EventFlow service, each with readWrite on its own database only.
//
// The mongo image runs this once, on an empty data volume (/docker-entrypoint-initdb.d), with mongosh, against
// a mongod started without authentication for the purpose; the root user (MONGO_INITDB_ROOT_USERNAME and
// _PASSWORD_FILE) already exists. The passwords come from the environment docker-compose.yml gives the mongo
// service, out of the .env that `eventflow compose-secrets` writes; each service's MONGODB_URI holds the same
// password (user:password@mongo:27017/?replicaSet=rs0&authSource=admin).
//
// readWrite covers all each service does on its database: reads and writes, indexes, transactions, change
// streams (reservas' projector) and killSessions of its own sessions (a projector ending the transactions a dead
// one of the same user left open). No user may read or write another service's database.

const SERVICES = [
  { user: 'usuarios', variable: 'EVENTFLOW_MONGO_USUARIOS_PASSWORD', databases: ['eventflow_usuarios'] },
  { user: 'eventos', variable: 'EVENTFLOW_MONGO_EVENTOS_PASSWORD', databases: ['eventflow_eventos'] },
  { user: 'reservas', variable: 'EVENTFLOW_MONGO_RESERVAS_PASSWORD', databases: ['eventflow_reservas'] },
];

// The rule infra/compose_secrets.py (PASSWORD_RULE) applies: the password goes into a URI unescaped.
const PASSWORD_RULE = /^[A-Za-z0-9_-]{16,}$/;

const admin = db.getSiblingDB('admin');
for (const service of SERVICES) {
  const password = process.env[service.variable] || '';
  if (!PASSWORD_RULE.test(password)) {
    throw new Error(
      service.variable + ' must be at least 16 letters, digits, - or _ (make it with `eventflow compose-secrets`); ' +
        'then remove the half-made volume: docker compose down --volumes',
    );
  }
  admin.createUser({
    user: service.user,
    pwd: password,
    roles: service.databases.map((database) => ({ role: 'readWrite', db: database })),
  });
  print('MongoDB user ' + service.user + ': readWrite on ' + service.databases.join(', '));
}
