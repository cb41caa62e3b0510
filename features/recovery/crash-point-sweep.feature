@sweep
Feature: A run survives its worker dying at every crash point it passes
  The worker-crash feature names the moments people think of; this one leaves
  none out. A reference order goes through the workflow on a worker that notes
  every crash point it passes: each batch it is about to record, each one inside
  its transaction, each one just recorded, each answer received, each timer
  fired. Then the same order is delivered again once per crash point, to a
  worker that dies exactly there, and a new worker takes over. Every one of those
  runs must end exactly as the reference did, replay exactly from its log, lose
  nothing that was committed and reach the order service exactly once. New crash
  points in the engine are swept as soon as they exist.

  The fault matrix then tries every other disruption at every crash point, and
  every disruption on the paths a refused or unavailable order service takes,
  and on the path of a worker taking over a run another worker left mid-step.
  The sweep profile (nightly) runs every point of it; every other run takes a
  seeded 10% sample and prints the seed.

  The random schedule mixes worker crashes, kills, a cut or silent network,
  dropped connections and a database crash at random crash points; the random
  kills come from outside at random times into the run, wherever it happens to
  be. Both print their seed; to replay the very same schedule:
    MESHHOOK_SEED=<seed> npx cucumber-js -p sweep --tags @slow features/recovery/crash-point-sweep.feature

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And the project "acme" with the workflow "order-reminder", whose runs must finish within 30 minutes:
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  Scenario Outline: A worker dies at every crash point of "<workflow>" in turn
    Given "acme" has run a reference order through "<workflow>", noting every crash point it passed
    When the order is run again once per crash point, with a worker dying there and a new worker taking over
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And every faulted order replays exactly from its log
    And the order service took every faulted order exactly once
    And nothing the engine committed was lost

    Examples:
      | workflow        |
      | order-sync      |
      | order-follow-up |

  Scenario: A worker dies at every crash point of a reminder that runs out of time, and it still fails at its deadline once
    Given "acme" has run a reference order through "order-reminder", noting every crash point it passed
    When the order is run again once per crash point, with a worker dying there and a new worker taking over
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And every faulted order replays exactly from its log
    And the order service took every faulted order as it took the reference order
    And nothing the engine committed was lost

  Scenario Outline: Every crash point of "<workflow>" meets "<disruption>"
    Given "acme" has run a reference order through "<workflow>", noting every crash point it passed
    When the order is run again once per crash point, and at each one <disruption>
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And every faulted order replays exactly from its log
    And the order service took every faulted order exactly once
    And nothing the engine committed was lost

    @db-crash
    Examples: the database itself crashes
      | workflow        | disruption                        |
      | order-sync      | the database crashes and restarts |
      | order-follow-up | the database crashes and restarts |

    Examples:
      | workflow        | disruption                                  |
      | order-sync      | its worker is killed from outside           |
      | order-sync      | the database drops the engine's connections |
      | order-sync      | the network to the database is cut          |
      | order-follow-up | its worker is killed from outside           |
      | order-follow-up | the database drops the engine's connections |
      | order-follow-up | the network to the database is cut          |

  Scenario Outline: While the order service answers <status>, every crash point of "order-sync" meets "<disruption>"
    Given the order service answers every order with <status>
    And "acme" has run a reference order through "order-sync", noting every crash point it passed
    When the order is run again once per crash point, and at each one <disruption>
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And every faulted order replays exactly from its log
    And the order service took every faulted order as it took the reference order
    And nothing the engine committed was lost

    @db-crash
    Examples: the database itself crashes
      | status | disruption                        |
      | 422    | the database crashes and restarts |
      | 503    | the database crashes and restarts |

    Examples: refused: the run takes the else branch
      | status | disruption                                  |
      | 422    | its worker dies                             |
      | 422    | its worker is killed from outside           |
      | 422    | the database drops the engine's connections |
      | 422    | the network to the database is cut          |

    Examples: unavailable: every attempt is retried until the run gives up
      | status | disruption                                  |
      | 503    | its worker dies                             |
      | 503    | its worker is killed from outside           |
      | 503    | the database drops the engine's connections |
      | 503    | the network to the database is cut          |

  Scenario Outline: After a death <moment>, the worker taking over "<workflow>" meets "<disruption>" at every crash point of its own
    Given "acme" has run a reference order through "<workflow>" whose worker died <moment>, noting every crash point of the worker that took over
    When the order is run again once per crash point, and at each one <disruption>
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And every faulted order replays exactly from its log
    And the order service took every faulted order exactly once
    And nothing the engine committed was lost

    @db-crash
    Examples: the database itself crashes
      | workflow   | moment                              | disruption                        |
      | order-sync | after the request of "push" is sent | the database crashes and restarts |

    Examples:
      | workflow        | moment                                | disruption                                  |
      | order-sync      | after the request of "push" is sent   | its worker dies                             |
      | order-sync      | after the request of "push" is sent   | the database drops the engine's connections |
      | order-sync      | after the request of "push" is sent   | the network to the database is cut          |
      | order-follow-up | after the request of "remind" is sent | its worker is killed from outside           |
      | order-follow-up | after the request of "remind" is sent | the network to the database goes silent     |

  @slow @db-crash
  Scenario: Orders meet a seeded random schedule of faults and still end as the reference order
    Given "acme" has run a reference order through "order-sync", noting every crash point it passed
    When 6 more orders each meet a random schedule of faults
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And every faulted order replays exactly from its log
    And the order service took every faulted order exactly once
    And nothing the engine committed was lost

  @slow
  Scenario: Workers killed at seeded random times still leave every order as the reference order
    Given "acme" has run a reference order through "order-sync", noting every crash point it passed
    When 6 more orders each lose their worker at a random time
    Then every planned fault fired
    And every faulted order ended exactly as the reference order
    And every faulted order replays exactly from its log
    And the order service took every faulted order exactly once
    And nothing the engine committed was lost
