/*
 * A Neo4j 5.26 Community server for the M3KG, assembled from Maven Central: the embedded DBMS
 * with Bolt, HTTP (Neo4j Browser at /browser/) and auth switched on. Started by scripts/neo4j.sh.
 */
package org.r2genkg;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.QueryExecutionException;
import org.neo4j.io.ByteUnit;
import org.neo4j.logging.log4j.Log4jLogProvider;

/**
 * Usage: {@code Neo4jServer [--home DIR] [--host H] [--bolt-port N] [--http-port N]}.
 *
 * <p>Each flag falls back to an environment variable (R2GENKG_NEO4J_HOME, _HOST, _BOLT_PORT,
 * _HTTP_PORT), then to 127.0.0.1:7687 / :7474. The password of user {@code neo4j} comes from
 * NEO4J_PASSWORD (dev default {@value #DEV_PASSWORD}) and is (re)applied on every start, so a
 * changed value takes effect on the next start. Once the password is set the file
 * {@code <home>/run/server-id} gets the DBMS id ({@code CALL dbms.info()}, created with the
 * store) and then {@code <home>/run/ready} appears; both are removed on shutdown (SIGTERM runs the
 * shutdown hook). The id file lets tests prove that the server at a URI is this one before they
 * clear it (graphdb/dev_server.py).
 */
public final class Neo4jServer {
    static final String DEV_PASSWORD = "r2genkg-dev";
    static final int MIN_PASSWORD_LENGTH = 8; // Neo4j's dbms.security.auth_minimum_password_length
    // Parameterised, so the password never lands in a query string or the query log.
    static final String SET_PASSWORD = "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED";
    static final String SAME_PASSWORD = "Old password and new password cannot be the same";
    static final String DBMS_ID = "CALL dbms.info() YIELD id RETURN id";

    record Options(Path home, String host, int boltPort, int httpPort, String password,
                   long pageCacheBytes) {}

    public static void main(String[] args) throws InterruptedException {
        Options opt = parse(args);
        Path ready = opt.home().resolve("run").resolve("ready");
        Path serverId = opt.home().resolve("run").resolve("server-id");
        DatabaseManagementService dbms = null;
        try {
            Files.createDirectories(ready.getParent());
            Files.deleteIfExists(ready);
            Files.deleteIfExists(serverId);
            dbms = start(opt);
        } catch (Exception e) {
            e.printStackTrace();
            fail("Neo4j did not start: " + e.getMessage(), 1);
        }

        DatabaseManagementService started = dbms;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("r2genkg: shutting down Neo4j");
            try {
                Files.deleteIfExists(ready);
                Files.deleteIfExists(serverId);
            } catch (IOException ignored) {
                // the script treats a dead pid as stopped anyway
            }
            started.shutdown();
            System.out.println("r2genkg: Neo4j stopped cleanly");
        }, "r2genkg-neo4j-shutdown"));

        try {
            boolean changed = applyPassword(started, opt.password());
            System.out.printf("r2genkg: neo4j password %s (%s)%n", changed ? "set" : "unchanged",
                    System.getenv("NEO4J_PASSWORD") == null ? "dev default" : "NEO4J_PASSWORD");
        } catch (Exception e) {
            // exits; the shutdown hook stops the DBMS
            fail("could not set the neo4j password: " + e.getMessage(), 1);
        }
        try {
            writeAtomically(serverId, dbmsId(started) + "\n");
            Files.writeString(ready, ProcessHandle.current().pid() + "\n");
        } catch (Exception e) {
            fail("could not write " + serverId + " or " + ready + ": " + e.getMessage(), 1);
        }
        System.out.printf("r2genkg: ready. bolt://%s:%d  http://%s:%d/browser/  user neo4j%n",
                opt.host(), opt.boltPort(), opt.host(), opt.httpPort());
        new CountDownLatch(1).await(); // until SIGTERM: the JVM runs the hook, then exits
    }

    static DatabaseManagementService start(Options opt) {
        // The embedded builder leaves Bolt, HTTP and auth OFF (their code defaults are false;
        // the neo4j distribution turns them on in neo4j.conf), so every one is set explicitly.
        SocketAddress bolt = new SocketAddress(opt.host(), opt.boltPort());
        SocketAddress http = new SocketAddress(opt.host(), opt.httpPort());
        return new DatabaseManagementServiceBuilder(opt.home())
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, bolt)
                .setConfig(BoltConnector.advertised_address, bolt) // Browser discovery names it
                .setConfig(HttpConnector.enabled, true)
                .setConfig(HttpConnector.listen_address, http)
                .setConfig(HttpConnector.advertised_address, http)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.udc_enabled, false) // no usage reports: offline
                .setConfig(GraphDatabaseSettings.pagecache_memory, opt.pageCacheBytes())
                .setUserLogProvider(new Log4jLogProvider(System.out)) // neo4j.log lines to stdout
                .build();
    }

    /**
     * Sets the password of user neo4j; false when it already was that password. Embedded
     * transactions run without auth, so the system database accepts this even on first start,
     * while neo4j still has its initial password 'neo4j'.
     */
    static boolean applyPassword(DatabaseManagementService dbms, String password) {
        try {
            dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME)
                    .executeTransactionally(SET_PASSWORD, Map.of("pw", password));
            return true;
        } catch (QueryExecutionException e) {
            // Neo4j refuses to "change" a password to itself: that is our unchanged case.
            if (String.valueOf(e.getMessage()).contains(SAME_PASSWORD)) {
                return false;
            }
            throw e;
        }
    }

    /** The DBMS id: a random UUID made with the store, so no other server has it by accident. */
    static String dbmsId(DatabaseManagementService dbms) {
        return dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME)
                .executeTransactionally(DBMS_ID, Map.of(), result -> String.valueOf(result.next().get("id")));
    }

    /** A reader never sees a half-written file: write a sibling, then rename it over. */
    static void writeAtomically(Path path, String text) throws IOException {
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
        Files.writeString(tmp, text);
        Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    static Options parse(String[] args) {
        String home = env("R2GENKG_NEO4J_HOME", null);
        String host = env("R2GENKG_NEO4J_HOST", "127.0.0.1");
        String bolt = env("R2GENKG_NEO4J_BOLT_PORT", "7687");
        String http = env("R2GENKG_NEO4J_HTTP_PORT", "7474");
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                fail("missing value after " + args[i]);
            }
            String value = args[i + 1];
            switch (args[i]) {
                case "--home" -> home = value;
                case "--host" -> host = value;
                case "--bolt-port" -> bolt = value;
                case "--http-port" -> http = value;
                default -> fail("unknown argument " + args[i]
                        + " (known: --home --host --bolt-port --http-port)");
            }
        }
        if (home == null) {
            fail("no home directory: pass --home DIR or set R2GENKG_NEO4J_HOME");
        }
        String password = env("NEO4J_PASSWORD", DEV_PASSWORD);
        if (password.length() < MIN_PASSWORD_LENGTH) {
            fail("NEO4J_PASSWORD must have at least " + MIN_PASSWORD_LENGTH + " characters");
        }
        long pageCache = ByteUnit.parse(env("R2GENKG_NEO4J_PAGECACHE", "512m"));
        return new Options(Path.of(home).toAbsolutePath(), host, port(bolt), port(http), password,
                pageCache);
    }

    private static int port(String value) {
        try {
            return Integer.parseInt(value);
        } catch (NumberFormatException e) {
            fail("not a port number: " + value);
            return -1;
        }
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private static void fail(String message) {
        fail(message, 2);
    }

    private static void fail(String message, int status) {
        System.err.println("r2genkg Neo4jServer: " + message);
        System.exit(status);
    }
}
